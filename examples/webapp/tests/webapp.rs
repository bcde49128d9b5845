//! The example application against a throwaway PostgreSQL server: the first request
//! after a deploy upgrades, everyone else waits, failures halt with the maintenance page,
//! and the admin page needs the token and shows the code update packages.

#[path = "../../../tests/it/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "admin-t0ken-for-tests";

/// The `upgrader` binary: built with the workspace, beside this package's binary.
fn upgrader_bin() -> PathBuf {
    let webapp = Path::new(env!("CARGO_BIN_EXE_webapp"));
    let path = webapp.with_file_name(format!("upgrader{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace, as tools/test-all does)",
        path.display()
    );
    path
}

struct App {
    child: Child,
    address: String,
    project: tempfile::TempDir,
    url: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example project, copied, with `edit` applied to its manifest, on a fresh
/// PostgreSQL database.
fn project(slow_seconds: f64) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("project");
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    for name in ["VERSION", "upgrade.xml", "scripts/install.sql"] {
        std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
    }
    let manifest = std::fs::read_to_string(dir.path().join("upgrade.xml")).unwrap();
    let manifest = manifest.replace(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x &lt; 5000000) SELECT count(*) FROM c;",
        &format!("SELECT pg_sleep({slow_seconds});"),
    );
    std::fs::write(dir.path().join("upgrade.xml"), manifest).unwrap();
    (dir, servers::postgres_database())
}

fn start(project: tempfile::TempDir, url: String) -> App {
    start_on(project, Some(url))
}

/// Starts the application on `url`, or (`None`) on its default database: SQLite in the
/// project directory.
fn start_on(project: tempfile::TempDir, url: Option<String>) -> App {
    let mut command = Command::new(env!("CARGO_BIN_EXE_webapp"));
    command
        .args(["--listen", "127.0.0.1:0", "--token", TOKEN, "--project"])
        .arg(project.path())
        .env("UPGRADER_BIN", upgrader_bin())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    let url =
        url.unwrap_or_else(|| format!("sqlite://{}", project.path().join("upgrader.db").display()));
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    App {
        child,
        address,
        project,
        url,
        stderr,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request(address: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn admin_json(app: &App) -> serde_json::Value {
    let reply = request(
        &app.address,
        "/admin/upgrades.json",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    // Chunked bodies: the JSON object is between the first '{' and the last '}'.
    let start = reply.body.find('{').unwrap();
    let end = reply.body.rfind('}').unwrap();
    serde_json::from_str(&reply.body[start..=end]).unwrap()
}

fn history_names(app: &App) -> Vec<(String, bool)> {
    let mut rows: Vec<(String, bool)> = admin_json(app)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["success"].as_bool().unwrap(),
            )
        })
        .collect();
    rows.reverse();
    rows
}

fn wait_for_200(app: &App, limit: Duration) -> Vec<Reply> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let reply = request(&app.address, "/", &[]);
        if reply.status == 200 {
            return seen;
        }
        seen.push(reply);
        assert!(
            start.elapsed() < limit,
            "no 200 within {limit:?}: {:?}",
            seen.last()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An existing database at 1.0.0 (so the steps, not the install, run).
fn adopt_at_1_0_0(url: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE greetings (id INTEGER PRIMARY KEY, text VARCHAR(200) NOT NULL); \
             INSERT INTO greetings VALUES (1, 'Hello');",
        )
        .unwrap();
}

#[test]
fn sixty_four_concurrent_requests_one_upgrade() {
    let (project, url) = project(2.0);
    adopt_at_1_0_0(&url);
    let app = start(project, url);
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|_| scope.spawn(|| request(&app.address, "/", &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The upgrade takes two seconds: all of them arrived during it.
    for reply in &replies {
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(reply.header("Retry-After").is_some(), "{reply:?}");
    }
    for reply in wait_for_200(&app, Duration::from_secs(60)) {
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(reply.header("Retry-After").is_some(), "{reply:?}");
    }
    let after: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|_| scope.spawn(|| request(&app.address, "/", &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(after.iter().all(|r| r.status == 200), "{after:?}");
    assert_eq!(
        history_names(&app),
        [
            ("greetings".to_string(), true),
            ("warm-cache".to_string(), true)
        ]
    );
    assert_eq!(admin_json(&app)["status"]["db_version"], "1.1.0");
}

#[test]
fn a_new_deploy_is_noticed_without_a_restart() {
    let (project, url) = project(0.1);
    let app = start(project, url);
    wait_for_200(&app, Duration::from_secs(60));
    assert_eq!(history_names(&app), [("install".to_string(), true)]);

    // Deploy: a new step and a higher VERSION, while the application runs.
    let dir = app.project.path();
    let manifest = std::fs::read_to_string(dir.join("upgrade.xml")).unwrap();
    std::fs::write(
        dir.join("upgrade.xml"),
        manifest.replace(
            "</upgrade>",
            "  <step name=\"deployed\" from=\"1.1.0\" to=\"1.2.0\"><sql>INSERT INTO greetings VALUES (3, 'Deployed');</sql></step>\n</upgrade>",
        ),
    )
    .unwrap();
    std::fs::write(dir.join("VERSION"), "1.2.0\n").unwrap();
    let deployed = Instant::now();
    let start = Instant::now();
    loop {
        let reply = request(&app.address, "/", &[]);
        if reply.status == 503 || admin_json(&app)["status"]["db_version"] == "1.2.0" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the deploy was not noticed within two seconds"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(deployed.elapsed() <= Duration::from_secs(2));
    wait_for_200(&app, Duration::from_secs(30));
    assert_eq!(
        history_names(&app),
        [
            ("install".to_string(), true),
            ("deployed".to_string(), true)
        ]
    );
}

#[test]
fn a_failing_step_halts_until_unlock_and_the_admin_page_says_why() {
    let (project, url) = project(0.1);
    adopt_at_1_0_0(&url);
    let dir = project.path().to_path_buf();
    let manifest = std::fs::read_to_string(dir.join("upgrade.xml")).unwrap();
    std::fs::write(
        dir.join("upgrade.xml"),
        manifest.replace(
            "SELECT pg_sleep(0.1);",
            "SELECT pg_sleep(0.1); INSERT INTO no_such_table VALUES (1);",
        ),
    )
    .unwrap();
    let app = start(project, url);
    let start = Instant::now();
    let page = loop {
        let reply = request(&app.address, "/", &[]);
        assert_ne!(reply.status, 200, "served while the upgrade failed");
        if reply.body.contains("Down for maintenance") {
            break reply;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(page.status, 503);
    // Requests keep getting the maintenance page; none runs the upgrade again.
    for _ in 0..20 {
        let reply = request(&app.address, "/", &[]);
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("Down for maintenance"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = admin_json(&app);
    assert_eq!(state["gate"]["state"], "halted");
    assert_eq!(state["status"]["lock"]["state"], "failed");
    assert_eq!(state["status"]["lock"]["step"], "warm-cache");
    assert!(state["status"]["lock"]["error"]
        .as_str()
        .unwrap()
        .contains("no_such_table"));
    let failures: Vec<_> = history_names(&app)
        .into_iter()
        .filter(|(_, ok)| !ok)
        .collect();
    assert_eq!(
        failures,
        [("warm-cache".to_string(), false)],
        "the upgrade ran again"
    );
    // The HTML admin page shows the step and the error.
    let html = request(&app.address, "/admin/upgrades", &[("X-Admin-Token", TOKEN)]);
    assert_eq!(html.status, 200);
    assert!(
        html.body.contains("warm-cache") && html.body.contains("no_such_table"),
        "{}",
        html.body
    );

    // Fixed and unlocked: the next request upgrades.
    std::fs::write(dir.join("upgrade.xml"), manifest).unwrap();
    let unlock = Command::new(upgrader_bin())
        .arg("--project")
        .arg(&dir)
        .arg("unlock")
        .env("DATABASE_URL", &app.url)
        .output()
        .unwrap();
    assert!(unlock.status.success(), "{unlock:?}");
    wait_for_200(&app, Duration::from_secs(30));
    assert_eq!(admin_json(&app)["status"]["db_version"], "1.1.0");
}

#[test]
fn a_plugin_that_aborts_does_not_take_the_server_down() {
    let (project, url) = project(0.1);
    adopt_at_1_0_0(&url);
    let dir = project.path().to_path_buf();
    // A C plugin whose step aborts the process that runs it.
    std::fs::create_dir(dir.join("plugins")).unwrap();
    let source = dir.join("crash.c");
    std::fs::write(
        &source,
        "#include <stdlib.h>\n#include \"upgrader_plugin.h\"\n\
         const uint32_t upgrader_plugin_abi = UPGRADER_PLUGIN_ABI_VERSION;\n\
         int32_t upgrader_step_crash(const upgrader_host *host) { (void)host; abort(); }\n",
    )
    .unwrap();
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-I"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/upgrader-plugin/include"))
        .arg(&source)
        .arg("-o")
        .arg(dir.join("plugins/libcrash.so"))
        .status()
        .unwrap();
    assert!(built.success());
    let manifest = std::fs::read_to_string(dir.join("upgrade.xml")).unwrap();
    std::fs::write(
        dir.join("upgrade.xml"),
        manifest.replace(
            "<sql>SELECT pg_sleep(0.1);</sql>",
            "<sql>SELECT pg_sleep(0.1);</sql><plugin library=\"crash\" method=\"crash\"/>",
        ),
    )
    .unwrap();
    let app = start(project, url);
    let start = Instant::now();
    loop {
        let reply = request(&app.address, "/", &[]);
        assert_ne!(reply.status, 200);
        if reply.body.contains("Down for maintenance") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still serving: the admin page answers, and says what happened.
    let state = admin_json(&app);
    assert_eq!(state["gate"]["state"], "halted");
    let lock = state["status"]["lock"]["state"].as_str().unwrap();
    assert!(lock == "stale" || lock == "failed", "{state}");
    assert!(
        state["gate"]["reason"].as_str().unwrap().contains("died"),
        "{state}"
    );
    // Nothing of the run stayed: no version recorded, the first step's row rolled back.
    assert!(state["status"]["db_version"].is_null(), "{state}");
    let mut client = postgres::Client::connect(&app.url, postgres::NoTls).unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM greetings", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[test]
fn the_admin_pages_need_the_token_which_is_never_logged() {
    let (project, url) = project(0.1);
    let app = start(project, url);
    wait_for_200(&app, Duration::from_secs(60));
    for path in ["/admin/upgrades", "/admin/upgrades.json"] {
        for headers in [
            vec![],
            vec![("Authorization", "Bearer wrong")],
            vec![("X-Admin-Token", "admin-t0ken-for-test")],
            vec![("Cookie", "upgrader_admin=nope")],
        ] {
            let reply = request(&app.address, path, &headers);
            assert_eq!(reply.status, 401, "{path} {headers:?}");
            assert!(
                !reply.body.contains("1.1.0"),
                "state shown without the token"
            );
        }
        let reply = request(
            &app.address,
            path,
            &[("Cookie", &format!("upgrader_admin={TOKEN}"))],
        );
        assert_eq!(reply.status, 200);
        assert!(reply.body.contains("1.1.0"));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !app.stderr.lock().unwrap().contains(TOKEN),
        "the token was logged"
    );
}

#[test]
fn the_admin_page_says_when_nothing_is_pending() {
    let (project, url) = project(0.1);
    let app = start(project, url);
    wait_for_200(&app, Duration::from_secs(60));
    let reply = request(
        &app.address,
        "/admin/upgrades",
        &[("Cookie", &format!("upgrader_admin={TOKEN}"))],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let pending = reply
        .body
        .split("<h2>Pending</h2>")
        .nth(1)
        .and_then(|rest| rest.split("<h2>History</h2>").next())
        .unwrap_or_else(|| panic!("no Pending section: {}", reply.body));
    assert!(
        pending.contains(
            "<p id=\"pending-none\">Nothing pending: the database is current at 1.1.0</p>"
        ),
        "{pending}"
    );
    assert!(!pending.contains("<li>"), "{pending}");
}

/// A WebDriver call to chromedriver (JSON over HTTP/1.1).
fn webdriver(
    port: u16,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    // Read the head, then exactly the body it announces (the driver may keep the
    // connection open).
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let lower = head.to_ascii_lowercase();
    let payload = if let Some(length) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        String::from_utf8_lossy(&body).into_owned()
    } else if lower.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            out.extend_from_slice(&chunk[..size]);
        }
        String::from_utf8_lossy(&out).into_owned()
    } else {
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        rest
    };
    let value: serde_json::Value = serde_json::from_str(&payload)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {payload}"));
    assert!(
        value["value"].get("error").is_none(),
        "{method} {path}: {value}"
    );
    value["value"].clone()
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Headless Chromium (Debian's chromium and chromium-driver) logs in to the admin page,
/// reads the versions, history and pending update package it shows, and saves a screenshot; without the token
/// it sees 401.
#[test]
fn browser_sees_the_admin_page_with_the_token_and_401_without() {
    const HINT: &str = "install them with `apt-get install -y chromium chromium-driver` (tools/test-all does this)";
    let chromedriver =
        find_program("chromedriver").unwrap_or_else(|| panic!("chromedriver not found: {HINT}"));
    let chromium = find_program("chromium")
        .or_else(|| find_program("chromium-browser"))
        .unwrap_or_else(|| panic!("chromium not found: {HINT}"));
    let (project, url) = project(0.1);
    adopt_at_1_0_0(&url);
    let app = start(project, url);
    wait_for_200(&app, Duration::from_secs(60));
    // A code update package waiting, which the page must describe.
    write_farewells_package(app.project.path());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _driver = Kill(&mut driver);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let profile = tempfile::tempdir().unwrap();
    let session = webdriver(
        port,
        "POST",
        "/session",
        Some(
            serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1200,1600",
                         format!("--user-data-dir={}", profile.path().display())]
            }}}}),
        ),
    );
    let id = session["sessionId"].as_str().unwrap().to_string();
    let base = format!("http://{}", app.address);
    let go = |path: &str| {
        webdriver(
            port,
            "POST",
            &format!("/session/{id}/url"),
            Some(serde_json::json!({"url": format!("{base}{path}")})),
        );
    };
    let source = || {
        webdriver(port, "GET", &format!("/session/{id}/source"), None)
            .as_str()
            .unwrap()
            .to_string()
    };
    let element = |css: &str| {
        let found = webdriver(
            port,
            "POST",
            &format!("/session/{id}/element"),
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        found
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };
    let text = |css: &str| {
        let element = element(css);
        webdriver(
            port,
            "GET",
            &format!("/session/{id}/element/{element}/text"),
            None,
        )
        .as_str()
        .unwrap()
        .to_string()
    };

    // A first navigation in a cold browser can report back before the page is there:
    // wait for the page's own text.
    let wait_for = |needle: &str| {
        let started = Instant::now();
        loop {
            let page = source();
            if page.contains(needle) {
                return page;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {needle:?} in the page: {page}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Without the token: 401, and none of the state.
    go("/admin/upgrades");
    let page = wait_for("401 Unauthorized");
    assert!(!page.contains("1.1.0"), "{page}");

    // Logged in with the token through the form.
    go("/admin/login");
    wait_for("id=\"token\"");
    let field = element("#token");
    webdriver(
        port,
        "POST",
        &format!("/session/{id}/element/{field}/value"),
        Some(serde_json::json!({"text": TOKEN})),
    );
    let button = element("#login");
    webdriver(
        port,
        "POST",
        &format!("/session/{id}/element/{button}/click"),
        Some(serde_json::json!({})),
    );
    let started = Instant::now();
    while !source().contains("id=\"versions\"") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the admin page did not load"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(text("#project"), "webapp");
    assert_eq!(text("#code-version"), "1.1.0");
    assert_eq!(text("#db-version"), "1.1.0");
    assert_eq!(text("#state"), "current");
    let history = text("#history");
    assert!(
        history.contains("greetings") && history.contains("warm-cache"),
        "{history}"
    );
    // The gate's run dumped the database first (pg_dump, custom format).
    let backups = text("#backups");
    assert!(
        backups.contains("db-webapp-none-") && backups.contains(".pgdump"),
        "{backups}"
    );

    // The pending package: its notes (escaped, shown as text), version, the database
    // step it brings, unsigned, installable.
    let updates = text("#updates-pending");
    for shown in [
        "webapp-1.2.0.zip",
        "Says goodbye <b>politely</b> & \"warmly\"",
        "Second line",
        "farewells (step: 1.1.0 → 1.2.0)",
        "unsigned",
        "none: installable",
    ] {
        assert!(updates.contains(shown), "{shown} not in {updates}");
    }
    assert_eq!(
        text("#updates-installed-none"),
        "No installed packages in updates/Updates_Installed/"
    );

    let png = webdriver(port, "GET", &format!("/session/{id}/screenshot"), None);
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("admin-upgrades.png"), &png).unwrap();
    webdriver(port, "DELETE", &format!("/session/{id}"), None);
}

/// A run refused before it starts (here: a plugin library that is not deployed) halts
/// the gate without touching anything, is not retried on every request, and is
/// retried once the deployed files change.
#[test]
fn a_refused_run_is_not_retried_until_the_deployed_files_change() {
    let (project, url) = project(0.1);
    adopt_at_1_0_0(&url);
    let dir = project.path().to_path_buf();
    let manifest = std::fs::read_to_string(dir.join("upgrade.xml")).unwrap();
    let with_plugin = manifest.replace(
        "<sql>SELECT pg_sleep(0.1);</sql>",
        "<sql>SELECT pg_sleep(0.1);</sql><plugin library=\"not_deployed\" method=\"run\"/>",
    );
    std::fs::write(dir.join("upgrade.xml"), &with_plugin).unwrap();
    let app = start(project, url);
    let start = Instant::now();
    loop {
        let reply = request(&app.address, "/", &[]);
        if reply.body.contains("Down for maintenance") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..30 {
        assert_eq!(request(&app.address, "/", &[]).status, 503);
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = admin_json(&app);
    assert!(
        state["gate"]["reason"]
            .as_str()
            .unwrap()
            .contains("plugin library 'not_deployed' not found"),
        "{state}"
    );
    // Refused before it started: no lock file, nothing recorded.
    assert_eq!(state["status"]["lock"]["state"], "free");
    assert!(state["history"].as_array().unwrap().is_empty());
    let runs = |app: &App| {
        app.stderr
            .lock()
            .unwrap()
            .matches("upgrader gate: upgrading")
            .count()
    };
    assert_eq!(runs(&app), 1, "the refused run was retried");

    // A deploy that fixes the manifest re-opens the gate.
    std::fs::write(dir.join("upgrade.xml"), manifest).unwrap();
    wait_for_200(&app, Duration::from_secs(30));
    assert_eq!(admin_json(&app)["status"]["db_version"], "1.1.0");
    assert_eq!(runs(&app), 2);
}

/// The example project, copied, with a quick `warm-cache`, on its default database
/// (SQLite in the project directory), which is at 1.0.0 already: the greetings table
/// exists, without the row the `greetings` step adds.
fn sqlite_project_at_1_0_0() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("project");
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    for name in ["VERSION", "upgrade.xml", "scripts/install.sql"] {
        std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
    }
    let manifest = std::fs::read_to_string(dir.path().join("upgrade.xml")).unwrap();
    std::fs::write(
        dir.path().join("upgrade.xml"),
        manifest.replace("x &lt; 5000000", "x &lt; 1000"),
    )
    .unwrap();
    let db = rusqlite::Connection::open(dir.path().join("upgrader.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE greetings (id INTEGER PRIMARY KEY, text VARCHAR(200) NOT NULL); \
         INSERT INTO greetings VALUES (1, 'Hello');",
    )
    .unwrap();
    dir
}

/// The gate's child run is a plain `upgrader run`: it backs the database up first, and
/// the admin page and its JSON list that backup as `upgrader backups --json` does.
#[test]
fn the_gates_run_backs_up_and_the_admin_page_lists_the_backup() {
    let project = sqlite_project_at_1_0_0();
    let dir = project.path().to_path_buf();
    let folder = dir.join("updates/Updates_Backups");
    let app = start_on(project, None);
    wait_for_200(&app, Duration::from_secs(60));
    let state = admin_json(&app);
    assert_eq!(state["status"]["db_version"], "1.1.0", "{state}");

    // One backup, made by the child run before its first statement: the database as it
    // was, with the one greeting and none of the run's rows.
    let files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("no backup folder {}: {e}", folder.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(
        file.starts_with("db-webapp-") && file.ends_with(".sqlite"),
        "{file}"
    );
    let backup = rusqlite::Connection::open_with_flags(
        folder.join(file),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let greetings: Vec<i64> = backup
        .prepare("SELECT id FROM greetings ORDER BY id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(greetings, [1]);
    let upgraded: i64 = rusqlite::Connection::open(dir.join("upgrader.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM greetings", [], |row| row.get(0))
        .unwrap();
    assert_eq!(upgraded, 2);
    // The webapp never backs up itself: the child said it did (its log is passed on).
    let log = app.stderr.lock().unwrap().clone();
    assert!(
        log.lines()
            .any(|line| line.contains("upgrader gate: child:")
                && line.contains("backed up the database to")
                && line.contains(file.as_str())),
        "{log}"
    );

    // The JSON lists it exactly as `upgrader backups --json` does.
    let listed = Command::new(upgrader_bin())
        .arg("--project")
        .arg(&dir)
        .args(["--json", "backups"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(state["backups"], listed, "{state}");
    let entry = &state["backups"][0];
    assert_eq!(entry["file"], file.as_str());
    assert_eq!(entry["version"], "none");
    assert_eq!(entry["backend"], "sqlite");
    let size = std::fs::metadata(folder.join(file)).unwrap().len();
    assert_eq!(entry["size"], size);
    assert!(entry["created"].as_str().unwrap().ends_with('Z'), "{entry}");

    // The page shows file, version, size and time.
    let page = request(&app.address, "/admin/upgrades", &[("X-Admin-Token", TOKEN)]);
    assert_eq!(page.status, 200, "{page:?}");
    let section = page
        .body
        .split("<h2>Backups</h2>")
        .nth(1)
        .unwrap_or_else(|| panic!("no Backups section: {}", page.body));
    for shown in [
        file.clone(),
        format!("title=\"{size} bytes\""),
        entry["created"].as_str().unwrap().to_string(),
        "<td>none</td>".to_string(),
    ] {
        assert!(section.contains(&shown), "{shown} not in {section}");
    }
    assert!(!section.contains("backups-none"), "{section}");
}

/// At most ten backups are listed, newest first, and names are escaped in the page.
#[test]
fn the_admin_page_lists_the_newest_ten_backups_escaped() {
    let project = sqlite_project_at_1_0_0();
    let dir = project.path().to_path_buf();
    let folder = dir.join("updates/Updates_Backups");
    std::fs::create_dir_all(&folder).unwrap();
    // Twelve made before (days 01..12), one project name that needs escaping, and a
    // file that is not a backup.
    for day in 1..=12 {
        std::fs::write(
            folder.join(format!("db-a<b>&c-1.0.{day}-202611{day:02}T120000Z.sqlite")),
            vec![0u8; day * 100],
        )
        .unwrap();
    }
    std::fs::write(folder.join("notes.txt"), "not a backup").unwrap();
    let app = start_on(project, None);
    wait_for_200(&app, Duration::from_secs(60));
    let state = admin_json(&app);
    let files: Vec<&str> = state["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["file"].as_str().unwrap())
        .collect();
    // The run's own backup (made now) first, then days 12 down to 04.
    assert_eq!(files.len(), 10, "{files:?}");
    assert!(files[0].starts_with("db-webapp-none-"), "{files:?}");
    let expected: Vec<String> = (4..=12)
        .rev()
        .map(|day| format!("db-a<b>&c-1.0.{day}-202611{day:02}T120000Z.sqlite"))
        .collect();
    assert_eq!(files[1..], expected);
    let page = request(&app.address, "/admin/upgrades", &[("X-Admin-Token", TOKEN)]);
    assert_eq!(page.status, 200, "{page:?}");
    let section = page.body.split("<h2>Backups</h2>").nth(1).unwrap();
    assert!(!section.contains("a<b>"), "{section}");
    assert!(
        section.contains("db-a&lt;b&gt;&amp;c-1.0.12-20261112T120000Z.sqlite"),
        "{section}"
    );
    assert!(
        section.contains("<td title=\"1200 bytes\">1.2 KiB</td>"),
        "{section}"
    );
    assert!(!section.contains("1.0.3-"), "{section}");
    assert!(!section.contains("notes.txt"), "{section}");
}

/// A run refused before it takes the lock (a plugin library that is not deployed)
/// makes no backup, and the page says there is none.
#[test]
fn a_refused_run_makes_no_backup_and_the_page_says_so() {
    let project = sqlite_project_at_1_0_0();
    let dir = project.path().to_path_buf();
    let manifest = std::fs::read_to_string(dir.join("upgrade.xml")).unwrap();
    std::fs::write(
        dir.join("upgrade.xml"),
        manifest.replace(
            "</sql>\n  </step>\n  <step name=\"warm-cache\"",
            "</sql><plugin library=\"not_deployed\" method=\"run\"/>\n  </step>\n  <step name=\"warm-cache\"",
        ),
    )
    .unwrap();
    assert!(std::fs::read_to_string(dir.join("upgrade.xml"))
        .unwrap()
        .contains("not_deployed"));
    let app = start_on(project, None);
    let start = Instant::now();
    loop {
        let reply = request(&app.address, "/", &[]);
        if reply.body.contains("Down for maintenance") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.join("updates/Updates_Backups").exists());
    let page = request(&app.address, "/admin/upgrades", &[("X-Admin-Token", TOKEN)]);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body
            .contains("<p id=\"backups-none\">No database backups in updates/Updates_Backups/</p>"),
        "{}",
        page.body
    );
    assert_eq!(admin_json(&app)["backups"], serde_json::json!([]));
}

/// A code update package at `path`: `update.xml`, and `files` under `files/`.
fn write_package(path: &Path, update_xml: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("update.xml", options).unwrap();
    zip.write_all(update_xml.as_bytes()).unwrap();
    for (name, content) in files {
        zip.start_file(format!("files/{name}"), options).unwrap();
        zip.write_all(content.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

/// Notes that need escaping, on two lines.
const NOTES: &str = "Says goodbye <b>politely</b> & \"warmly\"\nSecond line";

/// Version 1.2.0 of the example application for the project in `dir` (at 1.1.0): a
/// manifest with one more step, `farewells`, which the admin page must show as the
/// database step the package brings.
fn write_farewells_package(dir: &Path) -> PathBuf {
    let manifest = std::fs::read_to_string(dir.join("upgrade.xml")).unwrap();
    let manifest = manifest.replace(
        "</upgrade>",
        "  <step name=\"farewells\" from=\"1.1.0\" to=\"1.2.0\">\n    \
         <sql>INSERT INTO greetings (id, text) VALUES (3, 'Goodbye');</sql>\n  </step>\n</upgrade>",
    );
    let path = dir.join("updates/Updates_Pending/webapp-1.2.0.zip");
    write_package(
        &path,
        &format!(
            "<update project=\"webapp\" version=\"1.2.0\" requires=\"1.1.0\">\n  \
             <notes>{}</notes>\n</update>\n",
            NOTES
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        ),
        &[
            ("VERSION", "1.2.0\n"),
            ("upgrade.xml", &manifest),
            ("static/farewell.html", "<p>Goodbye</p>\n"),
        ],
    );
    path
}

/// The part of the admin page under its "Update packages" heading.
fn updates_section(body: &str) -> &str {
    body.split("<h2>Update packages</h2>")
        .nth(1)
        .and_then(|rest| rest.split("<h2>Backups</h2>").next())
        .unwrap_or_else(|| panic!("no Update packages section: {body}"))
}

/// The admin page and its JSON show the pending packages as `upgrader updates list
/// --json` describes them (notes, version, the database steps each brings, signed,
/// problems), escaped, and the installed ones newest first; looking changes nothing.
#[test]
fn the_admin_page_lists_pending_and_installed_update_packages_escaped() {
    let project = sqlite_project_at_1_0_0();
    let dir = project.path().to_path_buf();
    let app = start_on(project, None);
    wait_for_200(&app, Duration::from_secs(60));

    // Before any package: the page says so.
    let page = request(&app.address, "/admin/upgrades", &[("X-Admin-Token", TOKEN)]);
    assert_eq!(page.status, 200, "{page:?}");
    let section = updates_section(&page.body);
    assert!(
        section
            .contains("<p id=\"updates-none\">No update packages in updates/Updates_Pending/</p>"),
        "{section}"
    );
    assert!(
        section.contains("id=\"updates-installed-none\""),
        "{section}"
    );
    let state = admin_json(&app);
    assert_eq!(state["updates_pending"], serde_json::json!([]), "{state}");
    assert_eq!(state["updates_installed"], serde_json::json!([]), "{state}");

    let good = write_farewells_package(&dir);
    let pending = dir.join("updates/Updates_Pending");
    // For another project, with a name that needs escaping: listed with its problem.
    write_package(
        &pending.join("other<i>&.zip"),
        "<update project=\"other\" version=\"9.0.0\"><notes>not ours</notes></update>",
        &[("x.txt", "x")],
    );
    let installed = dir.join("updates/Updates_Installed");
    std::fs::create_dir_all(&installed).unwrap();
    for name in [
        "webapp-1.0.1-20261101T120000Z.zip",
        "webapp-1.0.1-20261101T120000Z.zip.minisig",
        "webapp-1.1.0-20261115T120000Z.zip",
        "a<b>-20261110T120000Z.zip",
        ".hidden.zip",
    ] {
        std::fs::write(installed.join(name), "kept").unwrap();
    }
    let before = std::fs::read(&good).unwrap();

    let state = admin_json(&app);
    let listed = Command::new(upgrader_bin())
        .arg("--project")
        .arg(&dir)
        .args(["--json", "updates", "list"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(state["updates_pending"], listed, "{state}");
    assert!(
        state.get("updates_error").is_none_or(|e| e.is_null()),
        "{state}"
    );
    let first = &state["updates_pending"][0];
    assert_eq!(first["file"], "webapp-1.2.0.zip", "{state}");
    assert_eq!(first["version"], "1.2.0");
    assert_eq!(first["notes"], NOTES);
    assert_eq!(first["signed"], false);
    assert_eq!(first["problems"], serde_json::json!([]));
    assert_eq!(
        first["database_steps"],
        serde_json::json!([{"name": "farewells", "from": "1.1.0", "to": "1.2.0", "kind": "step"}])
    );
    let second = &state["updates_pending"][1];
    assert_eq!(second["file"], "other<i>&.zip");
    assert!(
        second["problems"][0]
            .as_str()
            .unwrap()
            .contains("for project other"),
        "{second}"
    );
    assert_eq!(
        state["updates_installed"],
        serde_json::json!([
            "webapp-1.1.0-20261115T120000Z.zip",
            "a<b>-20261110T120000Z.zip",
            "webapp-1.0.1-20261101T120000Z.zip",
        ])
    );

    let page = request(&app.address, "/admin/upgrades", &[("X-Admin-Token", TOKEN)]);
    assert_eq!(page.status, 200, "{page:?}");
    let section = updates_section(&page.body);
    for shown in [
        "webapp-1.2.0.zip".to_string(),
        format!("sha256 {}", first["sha256"].as_str().unwrap()),
        "<td class=\"version\">1.2.0</td><td>1.1.0</td>".to_string(),
        "Says goodbye &lt;b&gt;politely&lt;/b&gt; &amp; &quot;warmly&quot;\nSecond line"
            .to_string(),
        "<li>farewells (step: 1.1.0 → 1.2.0)</li>".to_string(),
        "<td class=\"signed\">unsigned</td>".to_string(),
        "none: installable".to_string(),
        "other&lt;i&gt;&amp;.zip".to_string(),
        "it is for project other, and this is webapp".to_string(),
        "<li>a&lt;b&gt;-20261110T120000Z.zip</li>".to_string(),
        "<li>webapp-1.1.0-20261115T120000Z.zip</li>".to_string(),
    ] {
        assert!(section.contains(&shown), "{shown} not in {section}");
    }
    for absent in ["<b>", "<i>", "minisig", ".hidden", "updates-none"] {
        assert!(!section.contains(absent), "{absent} in {section}");
    }
    // Looking installs nothing: the package is still pending, unchanged, and the code
    // and database are where they were.
    assert_eq!(std::fs::read(&good).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(dir.join("VERSION")).unwrap().trim(),
        "1.1.0"
    );
    assert!(!dir.join("static").exists());
    assert_eq!(admin_json(&app)["status"]["db_version"], "1.1.0");
}
