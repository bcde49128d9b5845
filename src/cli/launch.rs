//! `launch`: DESIGN.md's start-up policy for any application, then `exec` of it.

use std::io::Write;

use upgrader::error::Exit;
use upgrader::{Config, Engine, Error};

use super::{print_outcome, print_report, verify_output};

/// What `launch` may do before starting the application.
pub(crate) struct LaunchPolicy {
    pub(crate) install_updates: bool,
    pub(crate) ignore_updates: bool,
    pub(crate) upgrade_database: bool,
    /// Step 3: drift (`verify`) exits 5.
    pub(crate) verify: bool,
}

/// DESIGN.md "Startup policy": update packages, then the database, then `exec` of the
/// application in this process. Returns only when the application is not started.
pub(crate) fn launch(
    config: Config,
    policy: LaunchPolicy,
    command: &[std::ffi::OsString],
) -> Result<u8, Error> {
    use std::os::unix::process::CommandExt;
    let mut err = std::io::stderr().lock();
    let mut engine = Engine::open(config.clone())?;
    let report = engine.status()?;
    if let Some(message) = &report
        .lock
        .message
        .as_ref()
        .filter(|_| report.exit() == Exit::Halted)
    {
        let _ = writeln!(err, "upgrader: halted: {message}");
        return Ok(Exit::Halted.code());
    }
    if !report.updates_pending.is_empty() {
        let names = report.updates_pending.join(", ");
        if policy.install_updates {
            if let Some(installed) = engine.install_updates(&[])? {
                let _ = writeln!(
                    err,
                    "upgrader: installed {names}: code {} -> {} (backup updates/Updates_Backups/{})",
                    installed.from, installed.to, installed.backup
                );
            }
            // The code changed under the engine: read it again.
            engine = Engine::open(config)?;
        } else if policy.ignore_updates {
            let _ = writeln!(
                err,
                "upgrader: update packages pending ({names}); starting without them"
            );
        } else {
            let _ = writeln!(
                err,
                "upgrader: update packages pending: {names}; start with --install-updates to install them or --ignore-updates to go on without them"
            );
            return Ok(Exit::UpdatesPending.code());
        }
    }
    let report = engine.status()?;
    match report.exit() {
        Exit::Halted => {
            let message = report.lock.message.clone().unwrap_or_default();
            let _ = writeln!(err, "upgrader: halted: {message}");
            return Ok(Exit::Halted.code());
        }
        Exit::Error => {
            print_report(&mut err, &report);
            return Ok(Exit::Error.code());
        }
        Exit::Pending if policy.upgrade_database => {
            let outcome = engine.run()?;
            print_outcome(&mut err, &outcome);
        }
        Exit::Pending => {
            print_report(&mut err, &report);
            let _ = writeln!(
                err,
                "upgrader: a database upgrade is pending; start with --upgrade-database to run it"
            );
            return Ok(Exit::Pending.code());
        }
        _ => {}
    }
    if policy.verify {
        let report = engine.verify()?;
        if report.any_drift() {
            verify_output::print_verify(&mut err, &report);
            let _ = writeln!(
                err,
                "upgrader: the database differs from what was recorded; start with --no-verify to start anyway"
            );
            return Ok(Exit::Drift.code());
        }
    }
    let _ = err.flush();
    drop(err);
    let error = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    Err(Error::Refused(format!(
        "cannot start {}: {error}",
        command[0].to_string_lossy()
    )))
}
