//! `updates fetch URL`: downloads code update packages into `updates/Updates_Pending/`,
//! from a package's own URL (`….zip`) or a JSON feed
//! `{"packages": [{"url", "sha256", "version", "signature_url"?}]}` (relative URLs
//! resolved against the feed's). Only packages newer than the installed code and not
//! already pending are downloaded, each to a hidden `.<name>.part` (which listings
//! ignore), checked (the feed's SHA-256, a readable package of the version announced),
//! synced, then renamed into place: a package appears in Pending whole or not at all.
//! Its signature, when there is one, is renamed into place first, so a package never
//! shows up unsigned for a moment when a key is trusted.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::package;
use crate::backup::progress::Progress;
use crate::error::Error;
use crate::version::Version;

/// How long connecting (and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read may wait for the server: a stalled download fails instead of
/// hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one whole download may take (a 200 MB package at 120 kB/s).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The largest feed read.
const MAX_FEED_BYTES: u64 = 16 << 20;
/// The largest signature file read.
const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// The largest package downloaded.
const MAX_PACKAGE_BYTES: u64 = package::MAX_TOTAL_BYTES;

/// A package `updates fetch` put into `Updates_Pending/`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Fetched {
    /// Its file name in `updates/Updates_Pending/`.
    pub file: String,
    /// The code version it installs.
    pub version: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// The signature file put beside it, when there was one.
    pub signature: Option<String>,
    /// Where it came from.
    pub url: String,
}

/// A package `updates fetch` did not download (or did not keep), and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// Where it is.
    pub url: String,
    /// The version it installs.
    pub version: String,
    /// Why it was not fetched.
    pub reason: String,
}

/// What `updates fetch` did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FetchReport {
    /// The packages now in `Updates_Pending/`, in version order.
    pub fetched: Vec<Fetched>,
    /// The ones it left alone (not newer, already pending).
    pub skipped: Vec<Skipped>,
}

/// Where the packages go and what they are compared with.
pub(crate) struct Target<'a> {
    /// `updates/Updates_Pending/`.
    pub pending: &'a Path,
    /// `updates/trusted.pub`: when it exists, a package fetched by its own URL brings
    /// `<url>.minisig` along if the server has one.
    pub trusted_key: &'a Path,
    /// The code version installed.
    pub installed: &'a Version,
}

#[derive(Deserialize)]
struct Feed {
    packages: Vec<FeedEntry>,
}

#[derive(Deserialize)]
struct FeedEntry {
    url: String,
    sha256: String,
    version: String,
    #[serde(default)]
    signature_url: Option<String>,
}

/// One package to download, as the feed announced it.
struct Wanted {
    url: url::Url,
    name: String,
    version: Version,
    sha256: Option<String>,
    signature: Option<url::Url>,
    /// A missing signature (404) is not an error: guessed for a direct URL.
    signature_optional: bool,
}

/// Fetches `url` (a package or a feed) into `target.pending`.
pub(crate) fn fetch(url: &str, target: &Target<'_>) -> Result<FetchReport, Error> {
    let parsed = parse_url(url)?;
    let agent = agent();
    let mut report = FetchReport::default();
    if parsed.path().to_ascii_lowercase().ends_with(".zip") {
        fetch_direct(&agent, parsed, target, &mut report)?;
        return Ok(report);
    }
    let feed = read_feed(&agent, &parsed)?;
    let mut wanted = Vec::new();
    for (index, entry) in feed.packages.into_iter().enumerate() {
        let at = format!("{parsed}: packages[{index}]");
        let version = Version::parse(&entry.version)
            .map_err(|e| fail(format!("{at}: version `{}`: {e}", entry.version)))?;
        let sha256 = entry.sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(fail(format!(
                "{at}: sha256 `{}` is not 64 hexadecimal digits",
                entry.sha256
            )));
        }
        let package_url = parsed
            .join(&entry.url)
            .map_err(|e| fail(format!("{at}: url `{}`: {e}", entry.url)))?;
        let package_url = parse_url(package_url.as_str())?;
        let name = file_name(&package_url).map_err(|e| fail(format!("{at}: {e}")))?;
        let signature = match &entry.signature_url {
            Some(s) => Some(
                parsed
                    .join(s)
                    .map_err(|e| fail(format!("{at}: signature_url `{s}`: {e}")))
                    .and_then(|u| parse_url(u.as_str()))?,
            ),
            None => None,
        };
        wanted.push(Wanted {
            url: package_url,
            name,
            version,
            sha256: Some(sha256),
            signature,
            signature_optional: false,
        });
    }
    // Oldest first: a chain of packages arrives in the order it installs.
    wanted.sort_by(|a, b| a.version.cmp(&b.version));
    for package in wanted {
        if let Some(reason) = skip_reason(&package.name, &package.version, target) {
            report.skipped.push(Skipped {
                url: package.url.to_string(),
                version: package.version.to_string(),
                reason,
            });
            continue;
        }
        match download_package(&agent, &package, target) {
            Ok(fetched) => report.fetched.push(fetched),
            Err(error) => return Err(with_fetched_before(error, &report)),
        }
    }
    Ok(report)
}

/// A package by its own URL: its version is known only once it is here, so it is
/// downloaded, read, and kept only when newer and not already pending.
fn fetch_direct(
    agent: &ureq::Agent,
    url: url::Url,
    target: &Target<'_>,
    report: &mut FetchReport,
) -> Result<(), Error> {
    let name = file_name(&url).map_err(|e| fail(format!("{url}: {e}")))?;
    let keyed = std::fs::symlink_metadata(target.trusted_key).is_ok();
    // `<url>.minisig`: beside the package on the server as it will be on disk (a query
    // string, say a token, stays at the end).
    let signature = keyed.then(|| {
        let mut signature = url.clone();
        signature.set_path(&format!("{}.minisig", url.path()));
        signature
    });
    let wanted = Wanted {
        url,
        name,
        version: Version::parse("0.0.0").expect("a valid version"),
        sha256: None,
        signature,
        signature_optional: true,
    };
    match download_package(agent, &wanted, target) {
        Ok(fetched) => report.fetched.push(fetched),
        Err(Refusal::Skip(version, reason)) => report.skipped.push(Skipped {
            url: wanted.url.to_string(),
            version,
            reason,
        }),
        Err(Refusal::Fail(error)) => return Err(error),
    }
    Ok(())
}

/// Why a download was not kept: an error, or (a direct URL) nothing to do.
enum Refusal {
    Fail(Error),
    Skip(String, String),
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        Refusal::Fail(error)
    }
}

fn with_fetched_before(refusal: Refusal, report: &FetchReport) -> Error {
    let error = match refusal {
        Refusal::Fail(error) => error,
        Refusal::Skip(_, reason) => fail(reason),
    };
    if report.fetched.is_empty() {
        return error;
    }
    let before: Vec<&str> = report.fetched.iter().map(|f| f.file.as_str()).collect();
    fail(format!(
        "{error} (fetched before it, and kept: {})",
        before.join(", ")
    ))
}

/// Why a package of `version` named `name` is not wanted, if it is not.
fn skip_reason(name: &str, version: &Version, target: &Target<'_>) -> Option<String> {
    if version <= target.installed {
        return Some(format!(
            "not newer than the installed version {}",
            target.installed
        ));
    }
    if target.pending.join(name).exists() {
        return Some(format!("already pending as {name}"));
    }
    let entries = std::fs::read_dir(target.pending).ok()?;
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with('.') || !file.to_ascii_lowercase().ends_with(".zip") {
            continue;
        }
        if let Ok(pending) = package::read(&entry.path()) {
            if pending.update.version == *version {
                return Some(format!("version {version} is already pending as {file}"));
            }
        }
    }
    None
}

/// Downloads one package to `.<name>.part`, checks it, and renames it (and its
/// signature) into place; the `.part` files are removed whatever goes wrong.
fn download_package(
    agent: &ureq::Agent,
    wanted: &Wanted,
    target: &Target<'_>,
) -> Result<Fetched, Refusal> {
    std::fs::create_dir_all(target.pending)
        .map_err(|e| fail(format!("cannot create {}: {e}", target.pending.display())))?;
    let mut part = PartFile::create(target.pending.join(format!(".{}.part", wanted.name)))?;
    let sha256 = download(agent, &wanted.url, &mut part, &wanted.name)?;
    let url = &wanted.url;
    if let Some(expected) = &wanted.sha256 {
        if sha256 != *expected {
            return Err(fail(format!(
                "{url}: sha256 mismatch: the feed says {expected}, the download is {sha256}; nothing was kept"
            ))
            .into());
        }
    }
    let read = package::read(&part.path).map_err(|problem| {
        fail(format!(
            "{url}: not a usable package: {problem}; nothing was kept"
        ))
    })?;
    let version = read.update.version;
    if wanted.sha256.is_some() {
        if version != wanted.version {
            return Err(fail(format!(
                "{url}: the feed says version {}, and its update.xml says {version}; nothing was kept",
                wanted.version
            ))
            .into());
        }
    } else if let Some(reason) = skip_reason(&wanted.name, &version, target) {
        return Err(Refusal::Skip(version.to_string(), reason));
    }
    // The signature first, into place before the package it signs.
    let mut signature_file = None;
    if let Some(signature_url) = &wanted.signature {
        let name = format!("{}.minisig", wanted.name);
        let mut sig_part = PartFile::create(target.pending.join(format!(".{name}.part")))?;
        match download_small(agent, signature_url, MAX_SIGNATURE_BYTES) {
            Ok(bytes) => {
                sig_part.write(&bytes)?;
                sig_part.sync()?;
                sig_part.rename_to(&target.pending.join(&name))?;
                signature_file = Some(name);
            }
            Err(Missing::NotFound) if wanted.signature_optional => {}
            Err(Missing::NotFound) => {
                return Err(fail(format!(
                    "cannot fetch {signature_url}: HTTP 404 Not Found; nothing was kept"
                ))
                .into());
            }
            Err(Missing::Error(error)) => return Err(error.into()),
        }
    }
    part.rename_to(&target.pending.join(&wanted.name))?;
    Ok(Fetched {
        file: wanted.name.clone(),
        version: version.to_string(),
        sha256,
        signature: signature_file,
        url: url.to_string(),
    })
}

/// A hidden download in progress, open and locked (so two fetches of one package never
/// write into one file, nor one rename the other's half): removed when dropped unless
/// renamed into place.
struct PartFile {
    path: PathBuf,
    file: File,
    kept: bool,
}

impl PartFile {
    /// Opens `path` (never through a link), locks it, and empties it: a `.part` left by a
    /// killed fetch is started over.
    fn create(path: PathBuf) -> Result<PartFile, Error> {
        let cannot = |e: std::io::Error| fail(format!("cannot write {}: {e}", path.display()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW);
        }
        let file = options.open(&path).map_err(cannot)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(fail(format!(
                    "another upgrader is downloading into {}; try again once it is done",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(cannot(e)),
        }
        // Locked from here: dropping it removes the file.
        let part = PartFile {
            path,
            file,
            kept: false,
        };
        part.file.set_len(0).map_err(|e| part.cannot(e))?;
        Ok(part)
    }

    fn cannot(&self, e: std::io::Error) -> Error {
        fail(format!("cannot write {}: {e}", self.path.display()))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.file.write_all(bytes).map_err(|e| self.cannot(e))
    }

    fn sync(&self) -> Result<(), Error> {
        self.file.sync_all().map_err(|e| self.cannot(e))
    }

    /// Renames it into place (still locked while it moves).
    fn rename_to(mut self, to: &Path) -> Result<(), Error> {
        std::fs::rename(&self.path, to).map_err(|e| {
            fail(format!(
                "cannot rename {} to {}: {e}",
                self.path.display(),
                to.display()
            ))
        })?;
        self.kept = true;
        // The rename itself made durable: a crash after it leaves the file there.
        if let Some(dir) = to.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        // Removed while still locked (the handle closes after this).
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams `url` into `part` (empty and locked), with progress on a terminal; returns the
/// SHA-256 of what was written.
fn download(
    agent: &ureq::Agent,
    url: &url::Url,
    part: &mut PartFile,
    name: &str,
) -> Result<String, Error> {
    let mut response = get(agent, url)?;
    let total = response.body().content_length();
    if total.is_some_and(|total| total > MAX_PACKAGE_BYTES) {
        return Err(fail(format!(
            "{url}: the package is larger than {} GiB",
            MAX_PACKAGE_BYTES >> 30
        )));
    }
    let mut reader = response
        .body_mut()
        .with_config()
        .limit(MAX_PACKAGE_BYTES)
        .reader();
    let mut hasher = sha2::Sha256::new();
    let mut progress = Progress::new(&format!("downloading {name}"), total);
    let mut done: u64 = 0;
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("cannot fetch {url}: {}", io_reason(&e)))),
        };
        hasher.update(&buffer[..n]);
        part.write(&buffer[..n])?;
        done += n as u64;
        progress.set(done, None);
    }
    if let Some(total) = total.filter(|total| *total != done) {
        return Err(fail(format!(
            "cannot fetch {url}: the server announced {total} bytes and sent {done}"
        )));
    }
    part.sync()?;
    Ok(crate::hex::hex(&hasher.finalize()))
}

/// Why a small download is not here.
enum Missing {
    NotFound,
    Error(Error),
}

fn download_small(agent: &ureq::Agent, url: &url::Url, limit: u64) -> Result<Vec<u8>, Missing> {
    let mut response = match agent.get(url.as_str()).call() {
        Ok(response) if response.status() == 404 => return Err(Missing::NotFound),
        Ok(response) => response,
        Err(error) => return Err(Missing::Error(http_fail(url, &error))),
    };
    check_status(url, &response).map_err(Missing::Error)?;
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| Missing::Error(http_fail(url, &e)))
}

fn read_feed(agent: &ureq::Agent, url: &url::Url) -> Result<Feed, Error> {
    let mut response = get(agent, url)?;
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_FEED_BYTES)
        .read_to_vec()
        .map_err(|e| http_fail(url, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        fail(format!(
            "{url}: not a package feed ({{\"packages\": [{{\"url\", \"sha256\", \"version\", \"signature_url\"?}}]}}): {e}"
        ))
    })
}

/// GET `url`, refusing anything but a success.
fn get(agent: &ureq::Agent, url: &url::Url) -> Result<ureq::http::Response<ureq::Body>, Error> {
    let response = agent
        .get(url.as_str())
        .call()
        .map_err(|e| http_fail(url, &e))?;
    check_status(url, &response)?;
    Ok(response)
}

fn check_status(url: &url::Url, response: &ureq::http::Response<ureq::Body>) -> Result<(), Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    Err(fail(format!(
        "cannot fetch {url}: HTTP {}{}",
        status.as_u16(),
        status
            .canonical_reason()
            .map(|r| format!(" {r}"))
            .unwrap_or_default()
    )))
}

fn http_fail(url: &url::Url, error: &ureq::Error) -> Error {
    let reason = match error {
        ureq::Error::Io(e) => io_reason(e),
        ureq::Error::Timeout(what) => format!("timed out ({what})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::BodyExceedsLimit(limit) => {
            format!("the response is larger than {limit} bytes")
        }
        other => other.to_string(),
    };
    fail(format!("cannot fetch {url}: {reason}"))
}

fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => error.to_string(),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .timeout_global(Some(DOWNLOAD_TIMEOUT))
        // Statuses are ours to word (with the URL).
        .http_status_as_error(false)
        .user_agent(concat!("upgrader/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn parse_url(text: &str) -> Result<url::Url, Error> {
    let url = url::Url::parse(text).map_err(|e| fail(format!("{text}: not a URL: {e}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(fail(format!(
            "{url}: only http and https URLs are fetched, not {other}"
        ))),
    }
}

/// The file name a package is saved as: the URL's last path segment, a plain name
/// ending in `.zip` (never hidden, never a path).
fn file_name(url: &url::Url) -> Result<String, String> {
    let name = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or("");
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !plain || !name.to_ascii_lowercase().ends_with(".zip") {
        return Err(format!(
            "`{name}` is not a plain file name ending in .zip (letters, digits, . _ + -)"
        ));
    }
    Ok(name.to_string())
}

fn fail(what: impl std::fmt::Display) -> Error {
    Error::Refused(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_keeps_the_last_segment_of_its_url_as_a_plain_name() {
        let name = |u: &str| file_name(&url::Url::parse(u).unwrap());
        assert_eq!(
            name("https://example.org/p/shop-1.1.0.zip?x=1").unwrap(),
            "shop-1.1.0.zip"
        );
        assert!(name("https://example.org/p/.hidden.zip").is_err());
        assert!(name("https://example.org/p/a%2F..%2Fb.zip").is_err());
        assert!(name("https://example.org/p/").is_err());
        assert!(name("https://example.org/p/shop.tar").is_err());
    }

    #[test]
    fn a_feed_may_carry_more_than_it_needs() {
        let feed: Feed = serde_json::from_str(
            r#"{"name": "shop", "packages": [{"url": "a.zip", "sha256": "x", "version": "1.0.0", "notes": "n"}]}"#,
        )
        .unwrap();
        assert_eq!(feed.packages.len(), 1);
        assert!(feed.packages[0].signature_url.is_none());
    }

    #[test]
    fn relative_urls_resolve_against_the_feed() {
        let feed = url::Url::parse("http://h:1/feeds/feed.json").unwrap();
        assert_eq!(
            feed.join("../pkgs/a.zip").unwrap().as_str(),
            "http://h:1/pkgs/a.zip"
        );
        assert!(parse_url("ftp://h/a.zip").is_err());
        assert!(parse_url("file:///a.zip").is_err());
    }
}
