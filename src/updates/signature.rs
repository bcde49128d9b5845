//! Package signatures: when `updates/trusted.pub` (a minisign public key) exists, every
//! package needs a detached minisign signature `<package>.zip.minisig` beside it, checked
//! over the zip's bytes. Prehashed signatures (minisign's default) are checked while the
//! file streams through, so a 200 MB package never sits in memory; legacy signatures
//! (Ed25519 over the whole file) are accepted for packages small enough to read at once.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use minisign_verify::{PublicKey, Signature};
use sha2::Digest;

/// The largest key or signature file read: both are a few lines.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;
/// The largest package a legacy (not prehashed) signature is checked over: it needs the
/// whole file in memory.
const MAX_LEGACY_BYTES: u64 = 32 << 20;

/// The trusted key, read once per listing.
pub(crate) struct TrustedKey(PublicKey);

impl TrustedKey {
    /// Reads the minisign public key at `path` (`updates/trusted.pub`); the error is the
    /// problem every package gets while the key cannot be read.
    pub(crate) fn load(path: &Path) -> Result<TrustedKey, String> {
        let shown = shown_key(path);
        let text = read_small(path).map_err(|e| format!("{shown}: cannot read the key: {e}"))?;
        PublicKey::decode(&text)
            .map(TrustedKey)
            .map_err(|e| format!("{shown}: cannot read the key: {}", lower(&e.to_string())))
    }
}

/// `updates/trusted.pub` as messages name it (relative to the project when it can be).
fn shown_key(path: &Path) -> String {
    let mut parts = path.components().rev();
    match (parts.next(), parts.next()) {
        (Some(name), Some(dir)) => Path::new(dir.as_os_str())
            .join(name.as_os_str())
            .display()
            .to_string(),
        _ => path.display().to_string(),
    }
}

/// The signature file of `package`: `<package>.minisig` beside it.
pub(crate) fn signature_path(package: &Path) -> PathBuf {
    let mut name = package.as_os_str().to_os_string();
    name.push(".minisig");
    PathBuf::from(name)
}

/// Opens `package` for an install: when a key is trusted (anything at `key`), checked
/// against `<package>.minisig` first and handed back rewound, so the bytes extracted are
/// the bytes whose signature was checked, even if the file is replaced in between; the
/// problem as `updates list` words it otherwise.
// Called by install's `extract` in place of its `File::open` (see the branch's report).
pub(crate) fn open_verified(package: &Path, key: &Path) -> Result<File, String> {
    let mut file = File::open(package).map_err(|e| format!("cannot read it: {e}"))?;
    if std::fs::symlink_metadata(key).is_ok() {
        let key = TrustedKey::load(key)?;
        verify_open(&mut file, package, &key, None)?;
    }
    Ok(file)
}

/// Checks the package open as `file` (read from where it is, then rewound to its start,
/// so the caller can read the same bytes again: no window for the file to be replaced
/// between the check and the use) against `<package>.minisig`. `sha256`: also hashes the
/// bytes in the same pass, for `updates list`.
pub(crate) fn verify_open(
    file: &mut File,
    package: &Path,
    key: &TrustedKey,
    mut sha256: Option<&mut String>,
) -> Result<(), String> {
    let signature_file = signature_path(package);
    let shown = signature_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = match read_small(&signature_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("no signature {shown}"));
        }
        Err(e) => return Err(format!("bad signature: cannot read {shown}: {e}")),
    };
    let signature = Signature::decode(&text)
        .map_err(|_| format!("bad signature: {shown} is not a minisign signature"))?;
    let bad = |e: minisign_verify::Error| match e {
        minisign_verify::Error::UnexpectedKeyId => {
            format!("bad signature: {shown} was made with another key than updates/trusted.pub")
        }
        minisign_verify::Error::InvalidSignature => format!(
            "bad signature: {shown} does not match the package's bytes (changed after signing?)"
        ),
        other => format!("bad signature: {shown}: {}", lower(&other.to_string())),
    };
    let mut hasher = sha256.as_ref().map(|_| sha2::Sha256::new());
    let result = match key.0.verify_stream(&signature) {
        Ok(mut stream) => {
            stream_through(file, |chunk| {
                stream.update(chunk);
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(chunk);
                }
            })
            .map_err(|e| format!("cannot read it: {e}"))?;
            stream.finalize().map_err(bad)
        }
        Err(minisign_verify::Error::UnsupportedLegacyMode) => {
            let size = file
                .metadata()
                .map_err(|e| format!("cannot read it: {e}"))?
                .len();
            if size > MAX_LEGACY_BYTES {
                return Err(format!(
                    "bad signature: {shown} is a legacy signature, checked only over packages up to {} MiB; sign it again with a current minisign (prehashed)",
                    MAX_LEGACY_BYTES >> 20
                ));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            file.take(MAX_LEGACY_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read it: {e}"))?;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&bytes);
            }
            key.0.verify(&bytes, &signature, true).map_err(bad)
        }
        Err(e) => Err(bad(e)),
    };
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if let (Some(out), Some(hasher)) = (sha256.as_mut(), hasher) {
        **out = hex(&hasher.finalize());
    }
    result
}

/// Feeds every byte from `file`'s current position to its end into `sink`.
fn stream_through(file: &mut File, mut sink: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buffer = vec![0; 256 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => sink(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

use crate::hex::hex;

/// A key or signature file, refused past [`MAX_KEY_FILE_BYTES`] (it is a few lines).
fn read_small(path: &Path) -> std::io::Result<String> {
    let file = File::open(path)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_KEY_FILE_BYTES >> 10
        )));
    }
    Ok(text)
}

/// The crate's messages begin with a capital; ours do not.
fn lower(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_sits_beside_the_package() {
        assert_eq!(
            signature_path(Path::new("/p/updates/Updates_Pending/shop-1.1.0.zip")),
            Path::new("/p/updates/Updates_Pending/shop-1.1.0.zip.minisig")
        );
        assert_eq!(
            shown_key(Path::new("/p/updates/trusted.pub")),
            "updates/trusted.pub"
        );
    }

    #[test]
    fn a_key_that_is_not_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("updates")).unwrap();
        let key = dir.path().join("updates/trusted.pub");
        std::fs::write(&key, "untrusted comment: key\nRWQ...\n").unwrap();
        let error = TrustedKey::load(&key).err().unwrap();
        assert!(
            error.starts_with("updates/trusted.pub: cannot read the key: invalid encoding"),
            "{error}"
        );
        let missing = TrustedKey::load(&dir.path().join("none.pub"))
            .err()
            .unwrap();
        assert!(missing.contains("cannot read the key"), "{missing}");
    }

    /// A key pair, its `trusted.pub` text, and a signer.
    fn keys() -> (minisign::KeyPair, String) {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let text = pair.pk.to_box().unwrap().into_string();
        (pair, text)
    }

    fn sign(pair: &minisign::KeyPair, bytes: &[u8]) -> String {
        minisign::sign(Some(&pair.pk), &pair.sk, bytes, None, None)
            .unwrap()
            .into_string()
    }

    #[test]
    fn prehashed_signatures_are_checked_while_streaming_and_the_file_is_rewound() {
        let dir = tempfile::tempdir().unwrap();
        let (pair, key_text) = keys();
        let key_path = dir.path().join("trusted.pub");
        std::fs::write(&key_path, key_text).unwrap();
        let key = TrustedKey::load(&key_path).unwrap();
        let package = dir.path().join("shop-1.1.0.zip");
        // More than one read buffer, so the stream is fed in pieces.
        let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&package, &bytes).unwrap();

        let check = |digest: Option<&mut String>| {
            let mut file = File::open(&package).unwrap();
            let result = verify_open(&mut file, &package, &key, digest);
            let mut again = Vec::new();
            file.read_to_end(&mut again).unwrap();
            assert_eq!(
                again.len(),
                std::fs::metadata(&package).unwrap().len() as usize
            );
            result
        };
        assert_eq!(
            check(None).unwrap_err(),
            "no signature shop-1.1.0.zip.minisig"
        );

        std::fs::write(signature_path(&package), sign(&pair, &bytes)).unwrap();
        let mut digest = String::new();
        check(Some(&mut digest)).unwrap();
        assert_eq!(digest, hex(&sha2::Sha256::digest(&bytes)));
        assert!(open_verified(&package, &key_path).is_ok());

        let mut tampered = bytes.clone();
        tampered[300_000] ^= 1;
        std::fs::write(&package, &tampered).unwrap();
        let error = check(None).unwrap_err();
        assert!(
            error.starts_with("bad signature: shop-1.1.0.zip.minisig does not match"),
            "{error}"
        );
        assert!(open_verified(&package, &key_path).is_err());

        let (other, _) = keys();
        std::fs::write(signature_path(&package), sign(&other, &tampered)).unwrap();
        let error = check(None).unwrap_err();
        assert!(error.contains("made with another key"), "{error}");

        std::fs::write(signature_path(&package), "not a signature").unwrap();
        let error = check(None).unwrap_err();
        assert!(error.contains("is not a minisign signature"), "{error}");

        // Without a key, nothing is checked.
        assert!(open_verified(&package, &dir.path().join("none.pub")).is_ok());
    }

    #[test]
    fn legacy_signatures_are_checked_over_the_whole_file() {
        // minisign-verify's own legacy fixture: a signature of the bytes `test`.
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("trusted.pub");
        std::fs::write(
            &key_path,
            "untrusted comment: minisign public key E7620F1842B4E81F\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n",
        )
        .unwrap();
        let package = dir.path().join("p.zip");
        std::fs::write(
            signature_path(&package),
            "untrusted comment: signature from minisign secret key\nRWQf6LRCGA9i59SLOFxz6NxvASXDJeRtuZykwQepbDEGt87ig1BNpWaVWuNrm73YiIiJbq71Wi+dP9eKL8OC351vwIasSSbXxwA=\ntrusted comment: timestamp:1555779966\tfile:test\nQtKMXWyYcwdpZAlPF7tE2ENJkRd1ujvKjlj1m9RtHTBnZPa5WKU5uWRs5GoP5M/VqE81QFuMKI5k/SfNQUaOAA==\n",
        )
        .unwrap();
        std::fs::write(&package, b"test").unwrap();
        let mut digest = String::new();
        let key = TrustedKey::load(&key_path).unwrap();
        let mut file = File::open(&package).unwrap();
        verify_open(&mut file, &package, &key, Some(&mut digest)).unwrap();
        assert_eq!(digest, hex(&sha2::Sha256::digest(b"test")));
        std::fs::write(&package, b"Test").unwrap();
        let error = open_verified(&package, &key_path).unwrap_err();
        assert!(error.contains("does not match"), "{error}");
    }
}
