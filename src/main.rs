//! The `upgrader` command line: a thin face over the library's [`upgrader::Engine`].
//!
//! The process starts at the C `main` below, not through std's start-up: that start-up
//! reads all of `/proc/self/maps` to place the main thread's stack guard, a tenth of
//! the instructions of a `check` (see [`main`]).
// The unit tests' binary keeps libtest's own `main`; elsewhere than on glibc, std's
// start-up is what fills in the arguments.
#![cfg_attr(all(not(test), target_os = "linux", target_env = "gnu"), no_main)]

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[path = "cli/launch.rs"]
mod launch;
#[path = "cli/lint.rs"]
mod lint;
#[path = "cli/rehearse.rs"]
mod rehearse_output;
#[path = "cli/verify.rs"]
mod verify_output;

use launch::{launch, LaunchPolicy};
use lint::lint;
use upgrader::engine::{PlanReport, ReportItem, RunResult};
use upgrader::error::Exit;
use upgrader::lock::LockState;
use upgrader::sql::Dialect;
use upgrader::{Config, Engine, Error, Report, RunOutcome, TransactionMode};

/// Safe, transactional self-upgrade of database-driven applications.
#[derive(Parser, Debug)]
#[command(name = "upgrader", version, about, long_about = None)]
struct Cli {
    /// Project directory holding VERSION and upgrade.xml.
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    project: PathBuf,

    /// Database URL: sqlite://PATH, postgres://…, mysql://… [default: $DATABASE_URL, else sqlite://DIR/upgrader.db]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    database: Option<String>,

    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,

    /// `single`: the whole run is one transaction. `per-step`: each step commits on its
    /// own, so a failure keeps the steps before it (the run can then stop half-way).
    #[arg(long, global = true, value_enum, default_value = "single")]
    transaction: TransactionArg,

    /// `run`: do not back the database up first (into updates/Updates_Backups/).
    #[arg(long, global = true)]
    no_backup: bool,

    /// `run`: how many database backups of the project to keep (at least 1: the one just
    /// made).
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 10,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    keep_backups: usize,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TransactionArg {
    Single,
    PerStep,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Code version, database version, pending steps, lock state.
    Status,
    /// Like status, then exit 0 current, 3 upgrade pending, 4 halted by a lock, 6 update
    /// packages pending.
    Check,
    /// The exact steps `run` would execute, executing nothing.
    Plan,
    /// Perform the upgrade.
    Run {
        /// Run the whole plan (install, steps, plugins) in one transaction, report what it
        /// did (statements and rows per step; rows and schema per table), then roll it
        /// back: the database, its history and the lock stay as they were. Exits 0 when
        /// the plan would pass, 1 naming the step that would fail.
        #[arg(long)]
        rehearse: bool,
    },
    /// Clear a failed or stale lock (refused while a live process holds it).
    Unlock,
    /// The applied steps.
    History,
    /// The database backups in updates/Updates_Backups/, newest first.
    Backups,
    /// Restore the database from a backup (a path, or a name `backups` lists), holding
    /// the upgrade lock meanwhile. Asks on a terminal; otherwise needs --yes.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Restore without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Code update packages in updates/Updates_Pending/.
    #[command(subcommand)]
    Updates(UpdatesCommand),
    /// The start-up policy for any application, then `exec` of CMD (same PID): update
    /// packages pending exit 6 unless --install-updates or --ignore-updates; a database
    /// upgrade pending exits 3 unless --upgrade-database; a lock that halts exits 4; drift
    /// (see `verify`) exits 5 unless --no-verify.
    /// Reports go to stderr; stdout is CMD's.
    Launch {
        /// Install pending update packages first.
        #[arg(long, conflicts_with = "ignore_updates")]
        install_updates: bool,
        /// Start without installing pending update packages.
        #[arg(long)]
        ignore_updates: bool,
        /// Run a pending database upgrade first (with its backup).
        #[arg(long)]
        upgrade_database: bool,
        /// Start without the drift check (`verify`), which otherwise exits 5 when a
        /// table's schema or an applied step differs from what was recorded.
        #[arg(long)]
        no_verify: bool,
        /// The application's command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Compare the recorded table schemas and applied steps' checksums with the database
    /// and the manifest; exits 5 on any difference. Read-only, unless --accept or
    /// --repair-version (which take the upgrade lock and record an `accept` history row).
    Verify {
        /// Record these tables' live schemas, or these steps' checksums as the manifest
        /// has them now, as accepted (needs --reason).
        #[arg(long, num_args = 1.., value_name = "NAME", requires = "reason", conflicts_with = "repair_version")]
        accept: Vec<String>,
        /// When every table of a project matches one earlier recorded version, record
        /// that version, so that the next run upgrades from it (needs --reason).
        #[arg(long, requires = "reason")]
        repair_version: bool,
        /// Why the change is accepted: kept in the history.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Static checks of the manifest's SQL, touching no database: every statement the
    /// guard would refuse on the target backend. Exits 1 when there is any.
    Lint {
        /// The backend to judge for [default: the one --database names]
        #[arg(long = "for", value_enum, value_name = "BACKEND")]
        target: Option<BackendArg>,
        /// MySQL: mark `transaction="none"` every step whose only findings are statements
        /// that commit implicitly, editing nothing else in upgrade.xml.
        #[arg(long)]
        fix: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UpdatesCommand {
    /// The pending packages, in version order: version, notes, SHA-256, signed or not,
    /// the database steps each brings, and what keeps it from being installed. Reads
    /// only each zip's directory and update.xml; extracts nothing.
    List,
    /// Install pending packages (the ones named, or every installable one) in version
    /// order: the project directory backed up to updates/Updates_Backups/app-…zip first,
    /// under the upgrade lock (state installing). The database upgrade is the next run.
    Install {
        /// Packages in updates/Updates_Pending/ (paths or names).
        files: Vec<PathBuf>,
    },
    /// Restore the newest app backup: the project directory exactly as it was before the
    /// last install; names the database backup that matches it.
    Rollback,
    /// Download packages into updates/Updates_Pending/: URL is a package (.zip) or a
    /// JSON feed {"packages": [{"url", "sha256", "version", "signature_url"?}]}; only
    /// versions newer than the installed code and not already pending.
    Fetch {
        /// An http(s) URL of a package or a feed.
        url: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
    Mysql,
}

/// [`Cli::parse`], without freeing clap's command tree and matches: the process ends
/// soon after, and dropping them was a sixth of a `check`'s instructions (callgrind:
/// 150,000 of 950,000), which a web app's deploy hook or health check pays every time.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let mut matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches_mut(&mut matches)
        .unwrap_or_else(|error| error.format(&mut command).exit());
    std::mem::forget(matches);
    std::mem::forget(command);
    cli
}

/// The process's entry on glibc, called by the C runtime: std's start-up (`lang_start`)
/// is not run. What it would do that matters here is done here: a standard stream that
/// is closed is opened on `/dev/null` (else the next file or socket opened would take
/// its number, and a log line would go into it); a write to a closed pipe or socket is
/// an error, not a signal that ends the process (`Command` still gives a child the
/// default); a panic exits 101; standard output is flushed before the process ends.
/// (std reads the arguments itself on glibc. A stack overflow on the main thread, which
/// the manifest's depth limit keeps away, would end the process with SIGSEGV instead of
/// std's message.)
#[cfg(all(not(test), target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // SAFETY: called once, before any other thread exists; `poll` reads and writes only
    // the array given, of the length given.
    unsafe {
        let mut streams = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        if libc::poll(streams.as_mut_ptr(), 3, 0) != -1 {
            for stream in streams {
                if stream.revents & libc::POLLNVAL != 0
                    && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1
                {
                    libc::abort();
                }
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // A panic (its message already printed by the hook) exits 101, as under std's
    // start-up, rather than aborting at this C boundary.
    let code = std::panic::catch_unwind(upgrader_main).unwrap_or(101);
    // Nothing is left to report an error to.
    let _ = std::io::stdout().flush();
    std::ffi::c_int::from(code)
}

/// The process's entry where std's start-up runs (see the C `main` above).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(upgrader_main())
}

#[cfg_attr(test, allow(dead_code))]
fn upgrader_main() -> u8 {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,plugin=info"))
        .format_timestamp_millis()
        .init();
    let cli = parse_cli();
    let config = Config::new(cli.project.clone())
        .database_url(cli.database.clone())
        .transaction(match cli.transaction {
            TransactionArg::Single => TransactionMode::Single,
            TransactionArg::PerStep => TransactionMode::PerStep,
        })
        .backup(!cli.no_backup)
        .keep_backups(cli.keep_backups);
    match execute(&cli, config) {
        Ok(code) => code,
        Err(error) => {
            if cli.json {
                let mut body = serde_json::json!({ "error": error.to_string(), "exit_code": error.exit().code() });
                if let Error::StepFailed {
                    project,
                    step,
                    committed,
                    ..
                } = &error
                {
                    body["project"] = serde_json::json!(project);
                    body["step"] = serde_json::json!(step);
                    body["committed"] = serde_json::json!(committed);
                }
                println!("{body}");
            } else {
                eprintln!("upgrader: error: {error}");
            }
            error.exit().code()
        }
    }
}

/// How long `run` waits for a code install in progress before giving up.
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Opens the engine; for `run`, first waits while a live process installs a code update
/// (its files are changing), then upgrades the code it installed.
fn open_engine(cli: &Cli, config: &Config) -> Result<Engine, Error> {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        match Engine::open(config.clone()) {
            Err(Error::Installing(why))
                if matches!(cli.command, Command::Run { rehearse: false })
                    && started.elapsed() < INSTALL_WAIT =>
            {
                if !said {
                    eprintln!("upgrader: {why}; waiting for it to finish");
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn execute(cli: &Cli, config: Config) -> Result<u8, Error> {
    if let Command::Launch {
        install_updates,
        ignore_updates,
        upgrade_database,
        no_verify,
        ref command,
    } = cli.command
    {
        let policy = LaunchPolicy {
            install_updates,
            ignore_updates,
            upgrade_database,
            verify: !no_verify,
        };
        return launch(config, policy, command);
    }
    let engine = open_engine(cli, &config)?;
    // Buffered: a run of a thousand steps prints a thousand lines, one write here.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let json = cli.json;
    let code = match cli.command {
        Command::Status | Command::Check => {
            let report = engine.status()?;
            if json {
                print_json(&mut out, &report);
            } else {
                print_report(&mut out, &report);
            }
            match cli.command {
                Command::Check => report.exit().code(),
                _ if report.all().any(|r| r.problem.is_some()) => Exit::Error.code(),
                _ => 0,
            }
        }
        Command::Plan => {
            let plan = engine.plan()?;
            if json {
                print_json(&mut out, &plan);
            } else {
                print_plan(&mut out, &plan);
            }
            0
        }
        Command::Run { rehearse: true } => {
            let report = engine.rehearse()?;
            if json {
                print_json(&mut out, &report);
            } else {
                rehearse_output::print_rehearsal(&mut out, &report);
            }
            if let Some(failed) = &report.failed {
                // The step and its error on stderr too, as a failed run reports them.
                eprintln!("error: rehearsal: {}", failed.error);
                1
            } else {
                0
            }
        }
        Command::Run { rehearse: false } => {
            let outcome = engine.run()?;
            if json {
                print_json(&mut out, &outcome);
            } else {
                print_outcome(&mut out, &outcome);
            }
            0
        }
        Command::Unlock => {
            let cleared = engine.unlock()?;
            let message = match &cleared {
                LockState::Free => "no lock to clear".to_string(),
                other => format!(
                    "removed the {} lock {}",
                    other.name(),
                    engine.lock_path().display()
                ),
            };
            if json {
                print_json(
                    &mut out,
                    &serde_json::json!({ "cleared": cleared.name(), "message": message }),
                );
            } else {
                let _ = writeln!(out, "{message}");
            }
            0
        }
        Command::Lint { target, fix } => {
            let dialect = match target {
                Some(BackendArg::Sqlite) => Dialect::Sqlite,
                Some(BackendArg::Postgres) => Dialect::Postgres,
                Some(BackendArg::Mysql) => Dialect::MySql,
                None => engine.dialect(),
            };
            lint(&engine, dialect, fix, json, &mut out)?
        }
        Command::Restore { ref file, yes } => {
            if !yes && !confirmed(file, &engine)? {
                return Err(Error::Config(
                    "restore cancelled; nothing was changed".into(),
                ));
            }
            let restored = engine.restore(file)?;
            if json {
                print_json(&mut out, &restored);
            } else {
                let _ = writeln!(
                    out,
                    "restored {}; the database records {}",
                    restored.file,
                    restored
                        .version
                        .as_deref()
                        .map_or("no version".to_string(), |v| format!("version {v}"))
                );
            }
            0
        }
        Command::Backups => {
            let dir = upgrader::Layout::new(&engine.project().dir).updates_backups();
            let backups = upgrader::backup::list(&dir);
            if json {
                print_json(&mut out, &backups);
            } else if backups.is_empty() {
                let _ = writeln!(out, "no database backups in {}", dir.display());
            } else {
                for backup in &backups {
                    let _ = writeln!(
                        out,
                        "{:<22} {:<8} {:<20} {:<12} {:>12} bytes  {}",
                        backup.created,
                        backup.backend,
                        backup.project,
                        backup.version,
                        backup.size,
                        backup.file
                    );
                }
            }
            0
        }
        Command::Updates(UpdatesCommand::List) => {
            let packages = engine.updates()?;
            if json {
                print_json(&mut out, &packages);
            } else if packages.is_empty() {
                let dir = upgrader::Layout::new(&engine.project().dir).updates_pending();
                let _ = writeln!(out, "no update packages in {}", dir.display());
            } else {
                for package in &packages {
                    print_package(&mut out, package);
                }
            }
            0
        }
        Command::Updates(UpdatesCommand::Install { ref files }) => {
            match engine.install_updates(files)? {
                None if json => {
                    let version = engine.project().code_version.to_string();
                    print_json(
                        &mut out,
                        &serde_json::json!({"from": version, "to": version, "packages": [], "backup": null}),
                    );
                }
                None => {
                    let _ = writeln!(out, "no update packages to install");
                }
                Some(installed) if json => print_json(&mut out, &installed),
                Some(installed) => {
                    for package in &installed.packages {
                        let _ = writeln!(
                            out,
                            "installed {} (version {}); kept as updates/Updates_Installed/{}",
                            package.file, package.version, package.installed_as
                        );
                    }
                    let _ = writeln!(
                        out,
                        "code {} -> {}; the project was backed up to updates/Updates_Backups/{}",
                        installed.from, installed.to, installed.backup
                    );
                    let _ = writeln!(out, "the database upgrade is next: upgrader run");
                }
            }
            0
        }
        Command::Updates(UpdatesCommand::Fetch { ref url }) => {
            let report = engine.fetch_updates(url)?;
            if json {
                print_json(&mut out, &report);
            } else {
                for f in &report.fetched {
                    let _ = writeln!(
                        out,
                        "fetched {} (version {}, sha256 {})",
                        f.file, f.version, f.sha256
                    );
                }
                for s in &report.skipped {
                    let _ = writeln!(
                        out,
                        "skipped {} (version {}): {}",
                        s.url, s.version, s.reason
                    );
                }
                if report.fetched.is_empty() {
                    let _ = writeln!(out, "nothing newer to fetch");
                }
            }
            0
        }
        Command::Updates(UpdatesCommand::Rollback) => {
            let rolled = engine.rollback_updates()?;
            if json {
                print_json(&mut out, &rolled);
            } else {
                let _ = writeln!(
                    out,
                    "restored updates/Updates_Backups/{}: the code is at version {} again",
                    rolled.backup, rolled.version
                );
                let _ = writeln!(
                    out,
                    "the tree as it was before is kept in updates/Updates_Backups/{}",
                    rolled.before
                );
                match &rolled.database_backup {
                    Some(file) => {
                        let _ = writeln!(
                            out,
                            "the database backup of that version: {file}; to restore it: upgrader restore {file} --yes"
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "no database backup of version {} was found",
                            rolled.version
                        );
                    }
                }
            }
            0
        }
        Command::Launch { .. } => unreachable!("launch opens its own engines"),
        Command::Verify {
            ref accept,
            repair_version,
            ref reason,
        } => {
            let reason = reason.as_deref().unwrap_or_default();
            if !accept.is_empty() || repair_version {
                let accepted = if repair_version {
                    engine.repair_version(reason)?
                } else {
                    engine.accept(accept, reason)?
                };
                if json {
                    print_json(&mut out, &accepted);
                } else {
                    verify_output::print_accepted(&mut out, &accepted);
                }
                0
            } else if !reason.is_empty() {
                return Err(Error::Config(
                    "--reason goes with --accept NAME… or --repair-version".into(),
                ));
            } else {
                let report = engine.verify()?;
                if json {
                    print_json(&mut out, &report);
                } else {
                    verify_output::print_verify(&mut out, &report);
                }
                match report.any_drift() {
                    true => Exit::Drift.code(),
                    false => 0,
                }
            }
        }
        Command::History => {
            let rows = engine.history()?;
            if json {
                print_json(&mut out, &rows);
            } else if rows.is_empty() {
                let _ = writeln!(out, "no history for {}", engine.project().name);
            } else {
                for row in rows {
                    let _ = writeln!(
                        out,
                        "{:<20} {:<12} {:<24} {:>10} -> {:<10} {:>6} ms  {}{}",
                        row.started_at,
                        row.kind,
                        row.name,
                        row.from_version.as_deref().unwrap_or("-"),
                        row.to_version,
                        row.duration_ms,
                        if row.success { "ok" } else { "FAILED" },
                        row.error.map(|e| format!(": {e}")).unwrap_or_default()
                    );
                }
            }
            0
        }
    };
    Ok(code)
}

/// Asks on the terminal whether to restore `file` over the database; refuses when stdin is
/// not a terminal (a script must say `--yes`).
fn confirmed(file: &std::path::Path, engine: &Engine) -> Result<bool, Error> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(Error::Config(
            "restore replaces the whole database: pass --yes (stdin is not a terminal to ask on); nothing was changed".into(),
        ));
    }
    eprint!(
        "Replace the whole database {} with the backup {}? [y/N] ",
        engine.database(),
        file.display()
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| Error::Config(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn print_json(out: &mut impl Write, value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value).expect("reports serialize");
    let _ = writeln!(out, "{text}");
}

fn item_line(item: &ReportItem) -> String {
    format!(
        "{:<12} {:<28} {} -> {}",
        item.kind,
        if item.kind == "version-only" {
            ""
        } else {
            &item.name
        },
        item.from.as_deref().unwrap_or("(empty)"),
        item.to
    )
}

fn print_report(out: &mut impl Write, report: &Report) {
    print_project_report(out, report, true);
    for package in report.packages.iter().flatten() {
        let _ = writeln!(out);
        print_project_report(out, package, false);
    }
}

fn print_project_report(out: &mut impl Write, report: &Report, root: bool) {
    if root {
        let _ = writeln!(out, "project:   {}", report.project);
        let _ = writeln!(out, "database:  {}", report.database);
    } else {
        let _ = writeln!(out, "package:   {}", report.project);
    }
    let _ = writeln!(out, "code:      {}", report.code_version);
    let _ = writeln!(
        out,
        "db:        {}",
        report.db_version.as_deref().unwrap_or("(none recorded)")
    );
    let _ = writeln!(out, "state:     {}", report.state.name());
    if root {
        let _ = writeln!(out, "lock:      {}", report.lock.state);
        if let Some(message) = &report.lock.message {
            let _ = writeln!(out, "           {message}");
        }
    }
    if let Some(problem) = &report.problem {
        let _ = writeln!(out, "problem:   {problem}");
    }
    if !report.pending.is_empty() {
        let _ = writeln!(out, "pending:");
        for item in &report.pending {
            let _ = writeln!(out, "  {}", item_line(item));
        }
    }
    if !report.updates_pending.is_empty() {
        let _ = writeln!(out, "update packages pending (upgrader updates list):");
        for file in &report.updates_pending {
            let _ = writeln!(out, "  {file}");
        }
    }
}

fn print_plan(out: &mut impl Write, plan: &PlanReport) {
    if let (Some(packages), Some(order)) = (&plan.packages, &plan.order) {
        let all: Vec<&PlanReport> = std::iter::once(plan).chain(packages).collect();
        for project in &all {
            let _ = writeln!(
                out,
                "{}: {} -> {}{}",
                project.project,
                project.db_version.as_deref().unwrap_or("(none recorded)"),
                project.to,
                if project.db_version.as_deref() == Some(project.to.as_str()) {
                    " (current)"
                } else {
                    ""
                }
            );
        }
        if order.is_empty() {
            let _ = writeln!(out, "no steps to run");
        }
        let width = all.iter().map(|p| p.project.len()).max().unwrap_or(0);
        for (index, entry) in order.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:>3}. {:<width$} {}",
                index + 1,
                entry.project,
                item_line(&entry.item)
            );
        }
        return;
    }
    if plan.steps.is_empty() && plan.db_version.is_none() {
        let _ = writeln!(
            out,
            "plan for {}: record version {} (the database records no version yet; no steps to run)",
            plan.project, plan.to
        );
        return;
    }
    if plan.steps.is_empty() && plan.db_version.as_deref() == Some(plan.to.as_str()) {
        let _ = writeln!(
            out,
            "{} is current at {}; nothing to do",
            plan.project, plan.to
        );
        return;
    }
    let _ = writeln!(
        out,
        "plan for {}: {} -> {}",
        plan.project,
        plan.from.as_deref().unwrap_or("(empty database)"),
        plan.to
    );
    if plan.steps.is_empty() {
        let _ = writeln!(out, "  record version {} (no steps to run)", plan.to);
    }
    for (index, item) in plan.steps.iter().enumerate() {
        let _ = writeln!(out, "  {:>3}. {}", index + 1, item_line(item));
    }
}

fn print_outcome(out: &mut impl Write, outcome: &RunOutcome) {
    print_project_outcome(out, outcome);
    for package in outcome.packages.iter().flatten() {
        print_project_outcome(out, package);
    }
}

fn print_project_outcome(out: &mut impl Write, outcome: &RunOutcome) {
    if outcome.result == RunResult::Current {
        let _ = writeln!(out, "{} is current at {}", outcome.project, outcome.to);
        return;
    }
    if outcome.result == RunResult::Recorded {
        let _ = writeln!(
            out,
            "recorded version {} for {} (the database had none; no steps to run) in {} ms",
            outcome.to, outcome.project, outcome.duration_ms
        );
        return;
    }
    let verb = if outcome.result == RunResult::Installed {
        "installed"
    } else {
        "upgraded"
    };
    let _ = writeln!(
        out,
        "{verb} {} {} -> {} in {} ms",
        outcome.project,
        outcome.from.as_deref().unwrap_or("(empty)"),
        outcome.to,
        outcome.duration_ms
    );
    for applied in &outcome.applied {
        let _ = writeln!(
            out,
            "  {:<12} {:<28} {} -> {}  ({} statement{}, {} ms)",
            applied.kind,
            if applied.kind == "version-only" {
                ""
            } else {
                &applied.name
            },
            applied.from.as_deref().unwrap_or("(empty)"),
            applied.to,
            applied.statements,
            if applied.statements == 1 { "" } else { "s" },
            applied.duration_ms
        );
    }
}

/// One pending package, for people.
fn print_package(out: &mut impl Write, package: &upgrader::updates::PendingPackage) {
    let version = package.version.as_deref().unwrap_or("?");
    let state = if package.incomplete {
        "incomplete"
    } else if package.installable() {
        "installable"
    } else {
        "refused"
    };
    let _ = writeln!(out, "{}: version {version} ({state})", package.file);
    if let Some(requires) = &package.requires {
        let _ = writeln!(out, "  requires {requires}");
    }
    let _ = writeln!(
        out,
        "  {}",
        if package.signed { "signed" } else { "unsigned" }
    );
    if let Some(sha256) = &package.sha256 {
        let _ = writeln!(out, "  sha256 {sha256}");
    }
    if let Some(notes) = &package.notes {
        for line in notes.lines() {
            let _ = writeln!(out, "  | {}", line.trim());
        }
    }
    if !package.database_steps.is_empty() {
        let _ = writeln!(out, "  database steps:");
        for step in &package.database_steps {
            let _ = writeln!(
                out,
                "    {} {} -> {}",
                step.name,
                step.from.as_deref().unwrap_or("(none)"),
                step.to
            );
        }
    }
    for problem in &package.problems {
        let _ = writeln!(out, "  problem: {problem}");
    }
}
