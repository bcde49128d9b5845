//! Package signatures (`updates/trusted.pub` and `<package>.minisig`) and `updates fetch`
//! (a package URL or a JSON feed, served here by a tiny HTTP server on a thread).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::Digest;

use crate::util::{Run, TestProject};

const MANIFEST: &str = r#"<upgrade project="shop" initial-version="1.0.0">
  <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY);</sql></install>
</upgrade>
"#;

/// A package's bytes: update.xml and one stored (uncompressed) file, so one byte of its
/// content can be changed without making the zip unreadable.
fn package(version: &str, requires: &str, readme: &str) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("update.xml", options).unwrap();
    write!(
        zip,
        "<update project=\"shop\" version=\"{version}\" requires=\"{requires}\">\n  <notes>Version {version}</notes>\n</update>\n"
    )
    .unwrap();
    zip.start_file("files/README", options).unwrap();
    zip.write_all(readme.as_bytes()).unwrap();
    zip.finish().unwrap().into_inner()
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn keys() -> minisign::KeyPair {
    minisign::KeyPair::generate_unencrypted_keypair().unwrap()
}

fn public_key(pair: &minisign::KeyPair) -> String {
    pair.pk.to_box().unwrap().into_string()
}

fn sign(pair: &minisign::KeyPair, bytes: &[u8]) -> String {
    minisign::sign(Some(&pair.pk), &pair.sk, bytes, None, None)
        .unwrap()
        .into_string()
}

fn pending_dir(project: &TestProject) -> PathBuf {
    project.path().join("updates/Updates_Pending")
}

/// Every name in `Updates_Pending/`, hidden ones (downloads in progress) included.
fn pending_files(project: &TestProject) -> Vec<String> {
    crate::util::names_in(&pending_dir(project))
}

/// Every file under the project but the database, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::util::file_tree(dir)
}

/// A project at code and database version 1.0.0.
fn project() -> TestProject {
    let project = TestProject::new("1.0.0", MANIFEST);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project
}

fn put(project: &TestProject, name: &str, bytes: &[u8]) {
    let dir = pending_dir(project);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn signed_packages_install_and_unsigned_tampered_or_wrong_key_ones_are_refused() {
    let project = project();
    let trusted = keys();
    let stranger = keys();
    project.write("updates/trusted.pub", &public_key(&trusted));

    let good = package("1.1.0", "1.0.0", "hello");
    put(&project, "a-signed-1.1.0.zip", &good);
    put(
        &project,
        "a-signed-1.1.0.zip.minisig",
        sign(&trusted, &good).as_bytes(),
    );
    put(
        &project,
        "b-unsigned-1.1.0.zip",
        &package("1.1.0", "1.0.0", "hello"),
    );
    // One byte of files/README changed after signing: still a readable zip.
    let mut tampered = package("1.1.0", "1.0.0", "hello");
    let signature = sign(&trusted, &tampered);
    let at = tampered.windows(5).position(|w| w == b"hello").unwrap();
    tampered[at] = b'j';
    put(&project, "c-tampered-1.1.0.zip", &tampered);
    put(
        &project,
        "c-tampered-1.1.0.zip.minisig",
        signature.as_bytes(),
    );
    let other = package("1.1.0", "1.0.0", "hello");
    put(&project, "d-wrong-key-1.1.0.zip", &other);
    put(
        &project,
        "d-wrong-key-1.1.0.zip.minisig",
        sign(&stranger, &other).as_bytes(),
    );

    let listed = project
        .run(&["updates", "list", "--json"])
        .assert_code(0)
        .json();
    let by_file = |file: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["file"] == file)
            .unwrap_or_else(|| panic!("{file} not listed: {listed}"))
            .clone()
    };
    let signed = by_file("a-signed-1.1.0.zip");
    assert_eq!(signed["signed"], true, "{signed}");
    assert_eq!(signed["problems"], serde_json::json!([]), "{signed}");
    assert_eq!(signed["sha256"], sha256(&good));
    let refused = [
        ("b-unsigned-1.1.0.zip", "no signature b-unsigned-1.1.0.zip.minisig"),
        (
            "c-tampered-1.1.0.zip",
            "bad signature: c-tampered-1.1.0.zip.minisig does not match the package's bytes",
        ),
        (
            "d-wrong-key-1.1.0.zip",
            "bad signature: d-wrong-key-1.1.0.zip.minisig was made with another key than updates/trusted.pub",
        ),
    ];
    for (file, reason) in refused {
        let package = by_file(file);
        assert_eq!(package["signed"], false, "{package}");
        let problems = package["problems"].as_array().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.as_str().unwrap().starts_with(reason)),
            "{file}: {problems:?}"
        );
    }
    let human = project.run(&["updates", "list"]);
    human.assert_code(0).assert_stdout(
        "a-signed-1.1.0.zip: version 1.1.0 (installable)\n  requires 1.0.0\n  signed",
    );

    // Each refused one: exit 1, the reason named, nothing changed (tree, Pending, lock).
    let before = tree(project.path());
    for (file, reason) in refused {
        project
            .run(&["updates", "install", file])
            .assert_code(1)
            .assert_stderr(file)
            .assert_stderr(reason);
        assert_eq!(tree(project.path()), before, "{file} changed something");
        assert!(!project.lock_path().exists(), "{file} left the lock");
    }

    // The signed one installs, its signature moved along with it.
    let installed = project
        .run(&["--json", "updates", "install", "a-signed-1.1.0.zip"])
        .assert_code(0)
        .json();
    assert_eq!(installed["to"], "1.1.0", "{installed}");
    assert_eq!(
        std::fs::read_to_string(project.path().join("README")).unwrap(),
        "hello"
    );
    let kept: Vec<String> = std::fs::read_dir(project.path().join("updates/Updates_Installed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        kept.iter()
            .any(|f| f.starts_with("a-signed-1.1.0-") && f.ends_with(".zip.minisig")),
        "{kept:?}"
    );
    assert!(!pending_dir(&project)
        .join("a-signed-1.1.0.zip.minisig")
        .exists());
}

#[test]
fn a_key_that_cannot_be_read_refuses_every_package() {
    let project = project();
    put(&project, "shop-1.1.0.zip", &package("1.1.0", "1.0.0", "x"));
    // Without a key: accepted, unsigned.
    let listed = project.run(&["updates", "list", "--json"]).json();
    assert_eq!(listed[0]["signed"], false);
    assert_eq!(listed[0]["problems"], serde_json::json!([]));
    project.run(&["check"]).assert_code(6);

    project.write(
        "updates/trusted.pub",
        "untrusted comment: key\nnot base64 at all\n",
    );
    let listed = project.run(&["updates", "list", "--json"]).json();
    let problem = listed[0]["problems"][0].as_str().unwrap();
    assert!(
        problem.starts_with("updates/trusted.pub: cannot read the key: "),
        "{problem}"
    );
    project.run(&["check"]).assert_code(0);
    let before = tree(project.path());
    project
        .run(&["updates", "install", "shop-1.1.0.zip"])
        .assert_code(1)
        .assert_stderr("updates/trusted.pub: cannot read the key");
    assert_eq!(tree(project.path()), before);
    assert!(!project.lock_path().exists());

    // A dangling link where the key should be is not "no key": still refused.
    std::fs::remove_file(project.path().join("updates/trusted.pub")).unwrap();
    std::os::unix::fs::symlink(
        "/nonexistent/key.pub",
        project.path().join("updates/trusted.pub"),
    )
    .unwrap();
    let listed = project.run(&["updates", "list", "--json"]).json();
    assert!(
        listed[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("cannot read the key"),
        "{listed}"
    );
}

/// A tiny HTTP/1.1 server on a thread: fixed responses by path (404 for the rest), one
/// request per connection; remembers the paths asked for.
struct Server {
    base: String,
    routes: Arc<Mutex<Routes>>,
    asked: Arc<Mutex<Vec<String>>>,
}

type Routes = BTreeMap<String, (u16, Vec<u8>)>;

impl Server {
    fn start(routes: Routes) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(Mutex::new(routes));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (served, log) = (routes.clone(), asked.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve(stream, &served, &log);
            }
        });
        Server {
            base,
            routes,
            asked,
        }
    }

    fn route(&self, path: &str, status: u16, body: Vec<u8>) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (status, body));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

fn serve(
    stream: TcpStream,
    routes: &Mutex<Routes>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request.split(' ').nth(1).unwrap_or("/").to_string();
    log.lock().unwrap().push(path.clone());
    let (status, body) = routes
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or((404, b"not here".to_vec()));
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Whatever",
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

fn fetch(project: &TestProject, args: &[&str]) -> Run {
    let mut command = project.command(args);
    // The test server is local: never through a proxy the environment may name.
    for proxy in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(proxy);
    }
    let output = command.output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn a_feed_brings_the_newer_packages_and_skips_the_rest() {
    let project = project();
    let trusted = keys();
    project.write("updates/trusted.pub", &public_key(&trusted));
    let old = package("1.0.0", "0.9.0", "old");
    let p11 = package("1.1.0", "1.0.0", "one-one");
    let p12 = package("1.2.0", "1.1.0", "one-two");
    let feed = serde_json::json!({"packages": [
        // Out of order on purpose; relative and absolute URLs.
        {"url": "../pkgs/shop-1.2.0.zip", "sha256": sha256(&p12), "version": "1.2.0",
         "signature_url": "../pkgs/shop-1.2.0.zip.minisig"},
        {"url": "/pkgs/shop-1.0.0.zip", "sha256": sha256(&old), "version": "1.0.0"},
        {"url": "PLACEHOLDER", "sha256": sha256(&p11).to_uppercase(), "version": "1.1.0",
         "signature_url": "/pkgs/shop-1.1.0.zip.minisig"},
    ]});
    let mut routes = Routes::new();
    routes.insert("/pkgs/shop-1.0.0.zip".into(), (200, old));
    routes.insert("/pkgs/shop-1.1.0.zip".into(), (200, p11.clone()));
    routes.insert(
        "/pkgs/shop-1.1.0.zip.minisig".into(),
        (200, sign(&trusted, &p11).into_bytes()),
    );
    routes.insert("/pkgs/shop-1.2.0.zip".into(), (200, p12.clone()));
    routes.insert(
        "/pkgs/shop-1.2.0.zip.minisig".into(),
        (200, sign(&trusted, &p12).into_bytes()),
    );
    let server = Server::start(routes);
    let mut feed = feed;
    feed["packages"][2]["url"] = serde_json::json!(server.url("/pkgs/shop-1.1.0.zip"));
    server.route("/feeds/feed.json", 200, serde_json::to_vec(&feed).unwrap());

    let report = fetch(
        &project,
        &[
            "--json",
            "updates",
            "fetch",
            &server.url("/feeds/feed.json"),
        ],
    )
    .assert_code(0)
    .json();
    assert_eq!(
        report["fetched"],
        serde_json::json!([
            {"file": "shop-1.1.0.zip", "version": "1.1.0", "sha256": sha256(&p11),
             "signature": "shop-1.1.0.zip.minisig", "url": server.url("/pkgs/shop-1.1.0.zip")},
            {"file": "shop-1.2.0.zip", "version": "1.2.0", "sha256": sha256(&p12),
             "signature": "shop-1.2.0.zip.minisig", "url": server.url("/pkgs/shop-1.2.0.zip")},
        ]),
        "{report}"
    );
    assert_eq!(report["skipped"][0]["version"], "1.0.0");
    assert!(report["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("not newer than the installed version 1.0.0"));
    // The older package was never downloaded.
    assert!(
        !server.asked().contains(&"/pkgs/shop-1.0.0.zip".to_string()),
        "{:?}",
        server.asked()
    );
    assert_eq!(
        pending_files(&project),
        [
            "shop-1.1.0.zip",
            "shop-1.1.0.zip.minisig",
            "shop-1.2.0.zip",
            "shop-1.2.0.zip.minisig"
        ]
    );
    assert_eq!(
        std::fs::read(pending_dir(&project).join("shop-1.2.0.zip")).unwrap(),
        p12
    );

    // Listed, signed and installable, in version order.
    let listed = project
        .run(&["updates", "list", "--json"])
        .assert_code(0)
        .json();
    let summary: Vec<(String, bool, String, usize)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["version"].as_str().unwrap().to_string(),
                p["signed"].as_bool().unwrap(),
                p["sha256"].as_str().unwrap().to_string(),
                p["problems"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("1.1.0".to_string(), true, sha256(&p11), 0),
            ("1.2.0".to_string(), true, sha256(&p12), 0)
        ]
    );

    // Again: both already pending, nothing downloaded, exit 0.
    let asked = server.asked().len();
    let again = fetch(
        &project,
        &["updates", "fetch", &server.url("/feeds/feed.json")],
    );
    again
        .assert_code(0)
        .assert_stdout("nothing newer to fetch")
        .assert_stdout("already pending as shop-1.1.0.zip");
    assert_eq!(
        server.asked().len(),
        asked + 1,
        "only the feed: {:?}",
        server.asked()
    );

    // And they install.
    project.run(&["updates", "install"]).assert_code(0);
    assert_eq!(
        std::fs::read_to_string(project.path().join("README")).unwrap(),
        "one-two"
    );
}

#[test]
fn a_sha256_mismatch_leaves_nothing_in_pending() {
    let project = project();
    let p11 = package("1.1.0", "1.0.0", "x");
    let mut routes = Routes::new();
    routes.insert(
        "/feed.json".into(),
        (
            200,
            serde_json::to_vec(&serde_json::json!({"packages": [
                {"url": "shop-1.1.0.zip", "sha256": sha256(b"something else"), "version": "1.1.0",
                 "signature_url": "shop-1.1.0.zip.minisig"}
            ]}))
            .unwrap(),
        ),
    );
    routes.insert("/shop-1.1.0.zip".into(), (200, p11));
    routes.insert("/shop-1.1.0.zip.minisig".into(), (200, b"sig".to_vec()));
    let server = Server::start(routes);
    let before = tree(project.path());
    let run = fetch(&project, &["updates", "fetch", &server.url("/feed.json")]);
    run.assert_code(1)
        .assert_stderr(&server.url("/shop-1.1.0.zip"))
        .assert_stderr("sha256 mismatch");
    assert_eq!(pending_files(&project), Vec::<String>::new());
    assert_eq!(tree(project.path()), before);
    // The signature is not even asked for.
    assert!(!server
        .asked()
        .contains(&"/shop-1.1.0.zip.minisig".to_string()));

    // --json: the error as data, exit 1.
    let run = fetch(
        &project,
        &["--json", "updates", "fetch", &server.url("/feed.json")],
    );
    run.assert_code(1);
    assert!(run.json()["error"]
        .as_str()
        .unwrap()
        .contains("sha256 mismatch"));
}

#[test]
fn http_failures_name_the_url_and_the_status() {
    let project = project();
    let p11 = package("1.1.0", "1.0.0", "x");
    let mut routes = Routes::new();
    routes.insert("/broken.json".into(), (500, b"oops".to_vec()));
    routes.insert(
        "/not-json.json".into(),
        (200, b"<html>hello</html>".to_vec()),
    );
    routes.insert(
        "/wrong-shape.json".into(),
        (200, br#"{"packages": [{"url": "a.zip"}]}"#.to_vec()),
    );
    routes.insert(
        "/missing-package.json".into(),
        (
            200,
            serde_json::to_vec(&serde_json::json!({"packages": [
                {"url": "gone/shop-1.1.0.zip", "sha256": sha256(&p11), "version": "1.1.0"}
            ]}))
            .unwrap(),
        ),
    );
    routes.insert(
        "/missing-signature.json".into(),
        (
            200,
            serde_json::to_vec(&serde_json::json!({"packages": [
                {"url": "shop-1.1.0.zip", "sha256": sha256(&p11), "version": "1.1.0",
                 "signature_url": "nowhere.minisig"}
            ]}))
            .unwrap(),
        ),
    );
    routes.insert(
        "/not-a-zip.json".into(),
        (
            200,
            serde_json::to_vec(&serde_json::json!({"packages": [
                {"url": "junk.zip", "sha256": sha256(b"junk"), "version": "1.1.0"}
            ]}))
            .unwrap(),
        ),
    );
    routes.insert("/junk.zip".into(), (200, b"junk".to_vec()));
    routes.insert("/shop-1.1.0.zip".into(), (200, p11));
    let server = Server::start(routes);
    let cases = [
        (
            "/nothing.json",
            "cannot fetch URL: HTTP 404 Not Found".to_string(),
        ),
        (
            "/broken.json",
            "cannot fetch URL: HTTP 500 Internal Server Error".to_string(),
        ),
        ("/not-json.json", "URL: not a package feed".to_string()),
        ("/wrong-shape.json", "URL: not a package feed".to_string()),
        (
            "/missing-package.json",
            format!(
                "cannot fetch {}: HTTP 404 Not Found",
                server.url("/gone/shop-1.1.0.zip")
            ),
        ),
        (
            "/missing-signature.json",
            format!(
                "cannot fetch {}: HTTP 404 Not Found",
                server.url("/nowhere.minisig")
            ),
        ),
        (
            "/not-a-zip.json",
            format!("{}: not a usable package", server.url("/junk.zip")),
        ),
        (
            "/gone.zip",
            "cannot fetch URL: HTTP 404 Not Found".to_string(),
        ),
    ];
    let before = tree(project.path());
    for (path, message) in cases {
        let url = server.url(path);
        let message = message.replace("URL", &url);
        fetch(&project, &["updates", "fetch", &url])
            .assert_code(1)
            .assert_stderr(&message);
        assert_eq!(pending_files(&project), Vec::<String>::new(), "{path}");
        assert_eq!(tree(project.path()), before, "{path}");
    }

    // Nobody listening.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/feed.json");
    fetch(&project, &["updates", "fetch", &url])
        .assert_code(1)
        .assert_stderr(&format!("cannot fetch {url}: connection refused"));
    fetch(&project, &["updates", "fetch", "ftp://example.org/a.zip"])
        .assert_code(1)
        .assert_stderr("only http and https URLs are fetched");
    assert_eq!(pending_files(&project), Vec::<String>::new());
}

#[test]
fn a_package_url_is_fetched_with_its_signature_when_a_key_is_trusted() {
    let project = project();
    let trusted = keys();
    let p11 = package("1.1.0", "1.0.0", "direct");
    let old = package("1.0.0", "0.9.0", "old");
    let mut routes = Routes::new();
    routes.insert("/dl/shop-1.1.0.zip".into(), (200, p11.clone()));
    routes.insert(
        "/dl/shop-1.1.0.zip.minisig".into(),
        (200, sign(&trusted, &p11).into_bytes()),
    );
    routes.insert("/dl/shop-1.0.0.zip".into(), (200, old));
    routes.insert("/dl/unsigned-1.1.0.zip".into(), (200, p11.clone()));
    routes.insert("/dl/query-1.1.0.zip?token=t".into(), (200, p11.clone()));
    routes.insert(
        "/dl/query-1.1.0.zip.minisig?token=t".into(),
        (200, sign(&trusted, &p11).into_bytes()),
    );
    let server = Server::start(routes);

    // Not newer: downloaded (its version is inside), then not kept.
    let report = fetch(
        &project,
        &[
            "--json",
            "updates",
            "fetch",
            &server.url("/dl/shop-1.0.0.zip"),
        ],
    )
    .assert_code(0)
    .json();
    assert_eq!(report["fetched"], serde_json::json!([]));
    assert_eq!(report["skipped"][0]["version"], "1.0.0", "{report}");
    assert_eq!(pending_files(&project), Vec::<String>::new());

    project.write("updates/trusted.pub", &public_key(&trusted));
    let run = fetch(
        &project,
        &["updates", "fetch", &server.url("/dl/shop-1.1.0.zip")],
    );
    run.assert_code(0).assert_stdout(&format!(
        "fetched shop-1.1.0.zip (version 1.1.0, sha256 {})",
        sha256(&p11)
    ));
    assert_eq!(
        pending_files(&project),
        ["shop-1.1.0.zip", "shop-1.1.0.zip.minisig"]
    );
    let listed = project.run(&["updates", "list", "--json"]).json();
    assert_eq!(listed[0]["signed"], true, "{listed}");
    assert_eq!(listed[0]["problems"], serde_json::json!([]), "{listed}");

    // A query string (a token) stays at the end of the signature's URL.
    std::fs::remove_file(pending_dir(&project).join("shop-1.1.0.zip")).unwrap();
    std::fs::remove_file(pending_dir(&project).join("shop-1.1.0.zip.minisig")).unwrap();
    fetch(
        &project,
        &[
            "updates",
            "fetch",
            &server.url("/dl/query-1.1.0.zip?token=t"),
        ],
    )
    .assert_code(0);
    assert_eq!(
        pending_files(&project),
        ["query-1.1.0.zip", "query-1.1.0.zip.minisig"]
    );
    let listed = project.run(&["updates", "list", "--json"]).json();
    assert_eq!(listed[0]["signed"], true, "{listed}");
    std::fs::remove_file(pending_dir(&project).join("query-1.1.0.zip")).unwrap();
    std::fs::remove_file(pending_dir(&project).join("query-1.1.0.zip.minisig")).unwrap();

    // A package the server has no signature for: fetched all the same (the listing then
    // says why it is refused); and the same version already pending is not fetched.
    fetch(
        &project,
        &["updates", "fetch", &server.url("/dl/unsigned-1.1.0.zip")],
    )
    .assert_code(0);
    assert_eq!(pending_files(&project), ["unsigned-1.1.0.zip"]);
    let listed = project.run(&["updates", "list", "--json"]).json();
    assert_eq!(
        listed[0]["problems"][0], "no signature unsigned-1.1.0.zip.minisig",
        "{listed}"
    );
    fetch(
        &project,
        &["updates", "fetch", &server.url("/dl/shop-1.1.0.zip")],
    )
    .assert_code(0)
    .assert_stdout("version 1.1.0 is already pending as unsigned-1.1.0.zip");
    assert_eq!(pending_files(&project), ["unsigned-1.1.0.zip"]);
}

#[test]
fn a_half_download_is_started_over_and_one_in_progress_is_left_alone() {
    let project = project();
    let p11 = package("1.1.0", "1.0.0", "x");
    let mut routes = Routes::new();
    routes.insert("/shop-1.1.0.zip".into(), (200, p11.clone()));
    let server = Server::start(routes);
    let part = pending_dir(&project).join(".shop-1.1.0.zip.part");
    std::fs::create_dir_all(pending_dir(&project)).unwrap();

    // Another fetch holds it: refused, and its file left alone.
    std::fs::write(&part, b"half of another download").unwrap();
    let held = std::fs::File::open(&part).unwrap();
    held.lock().unwrap();
    fetch(
        &project,
        &["updates", "fetch", &server.url("/shop-1.1.0.zip")],
    )
    .assert_code(1)
    .assert_stderr("another upgrader is downloading into");
    assert_eq!(std::fs::read(&part).unwrap(), b"half of another download");
    drop(held);

    // Left by a killed fetch: started over.
    fetch(
        &project,
        &["updates", "fetch", &server.url("/shop-1.1.0.zip")],
    )
    .assert_code(0);
    assert_eq!(pending_files(&project), ["shop-1.1.0.zip"]);
    assert_eq!(
        std::fs::read(pending_dir(&project).join("shop-1.1.0.zip")).unwrap(),
        p11
    );
}
