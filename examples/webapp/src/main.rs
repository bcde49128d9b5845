//! An axum application that upgrades its database on the first request after a deploy.
//!
//! ```text
//! webapp --token SECRET [--project DIR] [--database URL] [--listen 127.0.0.1:8080] [--no-gate]
//! ```
//!
//! `--token` (or `$ADMIN_TOKEN`) guards `/admin/upgrades` and `/admin/upgrades.json`:
//! give it as `Authorization: Bearer SECRET`, as `X-Admin-Token: SECRET`, or through the
//! login form at `/admin/login` (which sets a cookie). `--database` defaults to
//! `$DATABASE_URL`, else SQLite in the project directory. The upgrade itself runs in a
//! child process: the `upgrader` binary next to this one, or `$UPGRADER_BIN`; that run
//! backs the database up first, like any `upgrader run`, and the admin page lists the
//! newest backups in `updates/Updates_Backups/`. It also shows the code update packages:
//! those waiting in `updates/Updates_Pending/` (as `upgrader updates list` describes them:
//! notes, version, the database steps each brings, signed or not, problems) and those in
//! `updates/Updates_Installed/`; installing them is `upgrader updates install`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router, ServiceExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use upgrader::gate::tower::GateLayer;
use upgrader::gate::{Answer, Gate, GateOptions};

struct App {
    gate: Gate,
    /// SHA-256 of the admin token: compared in constant time, never logged.
    token_digest: [u8; 32],
}

fn usage(message: &str) -> ! {
    eprintln!("webapp: {message}\nusage: webapp --token SECRET [--project DIR] [--database URL] [--listen ADDR] [--verify]");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut project = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/project"));
    let mut database = std::env::var("DATABASE_URL").ok();
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
    let mut token = std::env::var("ADMIN_TOKEN").ok();
    // For the benchmark that prices the layer: the same routes without it.
    let mut gated = true;
    // Halt on schema drift at start (the admin page shows the diff).
    let mut verify_at_start = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--project" => project = value().into(),
            "--database" => database = Some(value()),
            "--listen" => {
                listen = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--listen needs HOST:PORT"))
            }
            "--token" => token = Some(value()),
            "--no-gate" => gated = false,
            "--verify" => verify_at_start = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let token = token
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| usage("an admin token is required (--token or $ADMIN_TOKEN)"));
    let gate = Gate::new(
        &project,
        database,
        GateOptions {
            verify_at_start,
            ..GateOptions::default()
        },
    );
    let app = Arc::new(App {
        gate: gate.clone(),
        token_digest: Sha256::digest(token.as_bytes()).into(),
    });
    let router = Router::new()
        .route("/", get(home))
        .route("/admin/upgrades", get(admin_page))
        .route("/admin/upgrades.json", get(admin_json))
        .route("/admin/login", get(login_form).post(login))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| usage(&format!("cannot listen on {listen}: {e}")));
    // Tests and scripts read the address from this line.
    println!(
        "listening on http://{}",
        listener.local_addr().expect("bound")
    );
    if gated {
        // Around the whole router, once (Router::layer would wrap every route).
        let service = tower_layer::Layer::layer(&GateLayer::new(gate), router);
        axum::serve(listener, ServiceExt::<Request>::into_make_service(service))
            .await
            .expect("the server runs");
    } else {
        axum::serve(listener, router)
            .await
            .expect("the server runs");
    }
}

/// The application's one page: trivial on purpose (the benchmark's route).
async fn home() -> &'static str {
    "Hello from the example application\n"
}

impl App {
    /// Whether the request carries the admin token (header or cookie).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let header_token = headers.get("x-admin-token").and_then(|v| v.to_str().ok());
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("upgrader_admin="));
        [bearer, header_token, cookie]
            .into_iter()
            .flatten()
            .any(|given| self.matches(given))
    }

    /// Compares digests, so the time taken says nothing about the token or its length.
    fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let difference = digest
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

fn unauthorized(html: bool) -> Response {
    if html {
        (
            StatusCode::UNAUTHORIZED,
            Html("<!doctype html><html><head><meta charset=\"utf-8\"><title>Unauthorized</title></head><body><h1>401 Unauthorized</h1><p><a href=\"/admin/login\">Log in</a> with the admin token.</p></body></html>\n"),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "unauthorized" })),
        )
            .into_response()
    }
}

/// How many backups the admin page lists (the newest).
const BACKUPS_SHOWN: usize = 10;

/// The newest database backups, as `upgrader backups --json` lists them. Read from the
/// folder's names alone, so they are listed even when the project cannot be opened.
fn backups(gate: &Gate) -> Vec<upgrader::backup::BackupFile> {
    let mut backups =
        upgrader::backup::list(&upgrader::Layout::new(gate.project_dir()).updates_backups());
    backups.truncate(BACKUPS_SHOWN);
    backups
}

/// The installed update packages' file names in `updates/Updates_Installed/`, newest
/// first (by the install stamp in each name), signatures and hidden files left out.
/// Read from the folder alone, so they are listed even when the project cannot be opened.
fn installed_packages(gate: &Gate) -> Vec<String> {
    let folder = upgrader::Layout::new(gate.project_dir()).updates_installed();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.') && name.to_ascii_lowercase().ends_with(".zip"))
        .collect();
    // `<stem>-<yyyymmddThhmmssZ>.zip`: names without a stamp sort last.
    let stamp = |name: &str| -> Option<String> {
        let stem = &name[..name.len() - 4];
        let (_, stamp) = stem.rsplit_once('-')?;
        (stamp.len() == 16 && stamp.as_bytes()[8] == b'T' && stamp.ends_with('Z'))
            .then(|| stamp.to_string())
    };
    names.sort_by(|a, b| stamp(b).cmp(&stamp(a)).then_with(|| a.cmp(b)));
    names
}

/// Everything the admin page shows, read without loading any plugin.
fn state(gate: &Gate) -> serde_json::Value {
    let answer = match gate.check() {
        Answer::Ready => serde_json::json!({ "state": "ready" }),
        Answer::Upgrading { retry_after } => {
            serde_json::json!({ "state": "upgrading", "retry_after": retry_after.as_secs() })
        }
        Answer::Halted { reason } => serde_json::json!({ "state": "halted", "reason": &*reason }),
    };
    let engine = match gate.engine() {
        Ok(engine) => engine,
        Err(error) => {
            return serde_json::json!({
                "gate": answer,
                "error": error.to_string(),
                "backups": backups(gate),
                "updates_pending": [],
                "updates_installed": installed_packages(gate),
            })
        }
    };
    let status = engine.status().map_err(|e| e.to_string());
    // As `upgrader updates list --json` lists them (each one hashed: the admin sees the
    // SHA-256 of what would be installed).
    let updates = engine.updates().map_err(|e| e.to_string());
    let history = engine.history().map_err(|e| e.to_string());
    let mut history = history.unwrap_or_default();
    // The most recent first, at most 50.
    history.reverse();
    history.truncate(50);
    serde_json::json!({
        "gate": answer,
        "status": status.as_ref().ok(),
        "error": status.as_ref().err(),
        "history": history,
        "backups": backups(gate),
        "updates_pending": updates.as_deref().unwrap_or_default(),
        "updates_error": updates.as_ref().err(),
        "updates_installed": installed_packages(gate),
    })
}

async fn admin_json(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !app.authorized(&headers) {
        return unauthorized(false);
    }
    let gate = app.gate.clone();
    let state = tokio::task::spawn_blocking(move || state(&gate))
        .await
        .expect("the report");
    no_store(Json(state).into_response())
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-store".parse().expect("a header value"),
    );
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn admin_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !app.authorized(&headers) {
        return unauthorized(true);
    }
    let gate = app.gate.clone();
    let state = tokio::task::spawn_blocking(move || state(&gate))
        .await
        .expect("the report");
    no_store(Html(render(&state)).into_response())
}

fn render(state: &serde_json::Value) -> String {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::Null => "—".to_string(),
        serde_json::Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    };
    let status = &state["status"];
    let lock = &status["lock"];
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Upgrades</title><style>\
         body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;width:100%}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
         .failed{color:#b00}.ok{color:#070}code{white-space:pre-wrap}.notes{white-space:pre-line}ul.steps,ul.problems{margin:0;padding-left:1.2em}small{word-break:break-all}</style></head><body>\
         <h1>Upgrades</h1>",
    );
    html.push_str(&format!(
        "<table id=\"versions\"><tr><th>Project</th><td id=\"project\">{}</td></tr>\
         <tr><th>Code version</th><td id=\"code-version\">{}</td></tr>\
         <tr><th>Database version</th><td id=\"db-version\">{}</td></tr>\
         <tr><th>State</th><td id=\"state\">{}</td></tr>\
         <tr><th>Gate</th><td id=\"gate\">{} {}</td></tr>\
         <tr><th>Lock</th><td id=\"lock\">{}{}{}</td></tr></table>",
        text(&status["project"]),
        text(&status["code_version"]),
        text(&status["db_version"]),
        text(&status["state"]),
        text(&state["gate"]["state"]),
        // A drift report keeps its lines: a diff per table.
        state["gate"]["reason"]
            .as_str()
            .map(|reason| format!("<code id=\"gate-reason\">{}</code>", escape(reason)))
            .unwrap_or_default(),
        text(&lock["state"]),
        lock["step"]
            .as_str()
            .map(|s| format!(" at step <b id=\"lock-step\">{}</b>", escape(s)))
            .unwrap_or_default(),
        lock["error"]
            .as_str()
            .map(|s| format!(
                "<br><code id=\"lock-error\" class=\"failed\">{}</code>",
                escape(s)
            ))
            .unwrap_or_default(),
    ));
    if let Some(error) = state["error"].as_str() {
        html.push_str(&format!("<p class=\"failed\">{}</p>", escape(error)));
    }
    html.push_str("<h2>Pending</h2>");
    let pending = status["pending"].as_array().map_or(&[][..], Vec::as_slice);
    if pending.is_empty() {
        // An empty list under a heading reads as a page that failed to load.
        let why = match (status["problem"].as_str(), status["state"].as_str()) {
            (Some(problem), _) => format!("Nothing can be planned: {}", escape(problem)),
            (None, Some("current")) => format!(
                "Nothing pending: the database is current at {}",
                text(&status["db_version"])
            ),
            (None, _) => "Nothing pending".to_string(),
        };
        html.push_str(&format!("<p id=\"pending-none\">{why}</p>"));
    }
    html.push_str("<ul id=\"pending\">");
    for item in pending {
        html.push_str(&format!(
            "<li>{} ({}: {} → {})</li>",
            text(&item["name"]),
            text(&item["kind"]),
            text(&item["from"]),
            text(&item["to"])
        ));
    }
    html.push_str("</ul><h2>History</h2><table id=\"history\"><tr><th>When</th><th>Step</th><th>Kind</th><th>From</th><th>To</th><th>ms</th><th>Result</th></tr>");
    for row in state["history"].as_array().into_iter().flatten() {
        let ok = row["success"].as_bool() == Some(true);
        html.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td class=\"step\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if ok { "ok" } else { "failed" },
            text(&row["started_at"]),
            text(&row["name"]),
            text(&row["kind"]),
            text(&row["from_version"]),
            text(&row["to_version"]),
            text(&row["duration_ms"]),
            if ok {
                "ok".to_string()
            } else {
                format!("<code>{}</code>", text(&row["error"]))
            }
        ));
    }
    html.push_str("</table>");
    render_updates(&mut html, state);
    html.push_str("<h2>Backups</h2>");
    let backups = state["backups"].as_array().map_or(&[][..], Vec::as_slice);
    if backups.is_empty() {
        html.push_str("<p id=\"backups-none\">No database backups in updates/Updates_Backups/</p>");
    } else {
        html.push_str(&format!(
            "<p>Newest first, at most {BACKUPS_SHOWN}, in updates/Updates_Backups/; \
             <code>upgrader restore FILE</code> brings one back.</p>"
        ));
    }
    html.push_str(
        "<table id=\"backups\"><tr><th>Created</th><th>File</th><th>Version</th><th>Size</th></tr>",
    );
    for backup in backups {
        html.push_str(&format!(
            "<tr><td>{}</td><td class=\"file\">{}</td><td>{}</td><td title=\"{} bytes\">{}</td></tr>",
            text(&backup["created"]),
            text(&backup["file"]),
            text(&backup["version"]),
            text(&backup["size"]),
            backup["size"].as_u64().map(human_size).unwrap_or_else(|| "—".into()),
        ));
    }
    html.push_str("</table></body></html>\n");
    html
}

/// The code update packages: those waiting in `Updates_Pending/` (what each brings, and
/// why one cannot be installed), then those installed.
fn render_updates(html: &mut String, state: &serde_json::Value) {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::Null => "—".to_string(),
        serde_json::Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    };
    html.push_str("<h2>Update packages</h2>");
    if let Some(error) = state["updates_error"].as_str() {
        html.push_str(&format!(
            "<p id=\"updates-error\" class=\"failed\">The packages cannot be read: {}</p>",
            escape(error)
        ));
    }
    let pending = state["updates_pending"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if pending.is_empty() {
        html.push_str("<p id=\"updates-none\">No update packages in updates/Updates_Pending/</p>");
    } else {
        html.push_str(
            "<p>Waiting in updates/Updates_Pending/, in the order they install; \
             <code>upgrader updates install</code> installs those without problems.</p>",
        );
    }
    html.push_str(
        "<table id=\"updates-pending\"><tr><th>File</th><th>Version</th><th>Requires</th>\
         <th>Notes</th><th>Database steps</th><th>Signed</th><th>Problems</th></tr>",
    );
    for package in pending {
        let installable = package["problems"]
            .as_array()
            .is_some_and(|problems| problems.is_empty());
        let steps = package["database_steps"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let steps = if steps.is_empty() {
            "none".to_string()
        } else {
            let items: String = steps
                .iter()
                .map(|step| {
                    format!(
                        "<li>{} ({}: {} → {})</li>",
                        text(&step["name"]),
                        text(&step["kind"]),
                        text(&step["from"]),
                        text(&step["to"])
                    )
                })
                .collect();
            format!("<ul class=\"steps\">{items}</ul>")
        };
        let problems = if installable {
            "<span class=\"ok\">none: installable</span>".to_string()
        } else {
            let items: String = package["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|problem| format!("<li>{}</li>", text(problem)))
                .collect();
            let incomplete = if package["incomplete"].as_bool() == Some(true) {
                "<p>Incomplete (still being copied?): looked at again later.</p>"
            } else {
                ""
            };
            format!("{incomplete}<ul class=\"problems\">{items}</ul>")
        };
        html.push_str(&format!(
            "<tr class=\"{}\"><td class=\"file\">{}{}</td><td class=\"version\">{}</td><td>{}</td>\
             <td class=\"notes\">{}</td><td>{}</td><td class=\"signed\">{}</td><td class=\"problems\">{}</td></tr>",
            if installable { "ok" } else { "failed" },
            text(&package["file"]),
            package["sha256"]
                .as_str()
                .map(|sha| format!("<br><small title=\"SHA-256\">sha256 {}</small>", escape(sha)))
                .unwrap_or_default(),
            text(&package["version"]),
            text(&package["requires"]),
            text(&package["notes"]),
            steps,
            if package["signed"].as_bool() == Some(true) { "signed" } else { "unsigned" },
            problems,
        ));
    }
    html.push_str("</table><h3>Installed</h3>");
    let installed = state["updates_installed"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if installed.is_empty() {
        html.push_str(
            "<p id=\"updates-installed-none\">No installed packages in updates/Updates_Installed/</p>",
        );
    }
    html.push_str("<ul id=\"updates-installed\">");
    for name in installed {
        html.push_str(&format!("<li>{}</li>", text(name)));
    }
    html.push_str("</ul>");
}

/// `512 B`, `1.5 KiB`, `2.0 GiB`: a size at a glance (the exact bytes are its title).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

async fn login_form() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Log in</title></head><body>\
         <h1>Admin log in</h1><form method=\"post\" action=\"/admin/login\">\
         <label>Admin token <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\"></label>\
         <button id=\"login\" type=\"submit\">Log in</button></form></body></html>\n",
    )
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(app): State<Arc<App>>, Form(form): Form<Login>) -> Response {
    if !app.matches(&form.token) {
        return unauthorized(true);
    }
    let cookie = format!(
        "upgrader_admin={}; HttpOnly; SameSite=Strict; Path=/admin",
        form.token
    );
    let mut response = Redirect::to("/admin/upgrades").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie
            .parse()
            .unwrap_or_else(|_| header::HeaderValue::from_static("")),
    );
    response
}
