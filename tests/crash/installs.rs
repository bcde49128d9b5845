//! Code installs killed after every journal record and every change to the tree (and
//! their recovery killed too): the next command leaves exactly the old tree or exactly
//! the new one, never a mix, and no lock; and a paused install keeps other commands out.

use std::time::{Duration, Instant};

use crate::update_packages::{code_tree, expected_new_tree, files_in, project_with_two_packages};
use crate::util::run_within;
use crate::{acted, at, report};

const INSTALL_POINTS: [&str; 2] = ["install-journal", "install-move"];

/// Killed (or failing) at every hit of every install failpoint, the next command finds
/// the tree exactly old or exactly new and no lock left; installing again then completes
/// it.
#[test]
fn an_install_killed_at_every_failpoint_leaves_the_old_or_the_new_tree() {
    let started = Instant::now();
    let mut cases = 0;
    let (mut saw_old, mut saw_new) = (false, false);
    for (point, action) in INSTALL_POINTS
        .into_iter()
        .flat_map(|point| [(point, "abort"), (point, "error")])
    {
        for n in 1.. {
            let case = format!("{point}#{n}={action}");
            let project = project_with_two_packages();
            let old = code_tree(&project);
            let new = expected_new_tree(&old);
            let mut command = project.command(&["updates", "install"]);
            command.env("UPGRADER_FAILPOINTS", at(point, n, action));
            let killed = run_within(command, Duration::from_secs(60));
            if !acted(&killed.stderr, point, n) {
                // Past the last hit: the install went through.
                killed.assert_code(0);
                assert_eq!(code_tree(&project), new, "{case}");
                assert!(n > 1, "{case}: an install never reaches {point}");
                break;
            }
            cases += 1;
            assert_ne!(killed.code, 0, "{case}: went on after the failpoint");
            if action == "abort" {
                assert!(
                    project.lock_path().exists(),
                    "{case}: the killed install left its lock"
                );
            } else {
                killed.assert_stderr("failpoint");
            }
            // The recovery killed too, at its first move when it makes one: recovering
            // again still ends in one tree.
            let mut again = project.command(&["status"]);
            again.env("UPGRADER_FAILPOINTS", at("install-move", 1, "abort"));
            let _ = run_within(again, Duration::from_secs(60));
            // Any command first finishes or undoes the install.
            project.run(&["status"]).assert_code(0);
            let after = code_tree(&project);
            assert!(after == old || after == new, "{case}: a mix of trees");
            saw_old |= after == old;
            saw_new |= after == new;
            assert!(!project.lock_path().exists(), "{case}: the lock stayed");
            assert!(!project.path().join("updates/.install").exists(), "{case}");
            if after == old {
                assert_eq!(files_in(&project, "Updates_Pending").len(), 2, "{case}");
                project.run(&["updates", "install"]).assert_code(0);
            }
            assert_eq!(code_tree(&project), new, "{case}: completed");
            assert!(files_in(&project, "Updates_Pending").is_empty(), "{case}");
        }
    }
    assert!(
        saw_old && saw_new,
        "crashes before and after the point of no return"
    );
    report(&format!(
        "crash matrix: code installs: {cases} cases (failpoint hits: abort and error) in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
}

/// While a live process installs, other commands do not read the changing files: they
/// halt (exit 4, saying a code update is being installed), but a run waits for it and
/// then upgrades the database to the code it installed.
#[test]
fn commands_halt_and_runs_wait_while_an_install_is_under_way() {
    let project = project_with_two_packages();
    let mut command = project.command(&["updates", "install"]);
    command
        .env("UPGRADER_FAILPOINTS", "install-move=pause(300)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    let journal = project.path().join("updates/.install/journal");
    crate::util::wait_for(Duration::from_secs(60), "the moves to start", || {
        std::fs::read_to_string(&journal).is_ok_and(|text| text.contains(" applying "))
    });
    project
        .run(&["status"])
        .assert_code(4)
        .assert_stderr("a code update is being installed");
    let run = project
        .run(&["run"])
        .assert_code(0)
        .assert_stderr("waiting for it to finish")
        .assert_stdout("1.2.0")
        .stdout
        .clone();
    assert!(child.wait().unwrap().success(), "{run}");
    assert_eq!(project.version_of("shop").as_deref(), Some("1.2.0"));
    let status = project.run(&["status", "--json"]);
    status.assert_code(0);
    assert_eq!(status.json()["code_version"], "1.2.0");
}
