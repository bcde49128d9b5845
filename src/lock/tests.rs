//! The lock's unit tests: states, hostile paths, sizes, and the races with finishing runs.

use super::*;

fn record() -> LockRecord {
    LockRecord {
        pid: 1,
        host: "h".into(),
        started_at: "t".into(),
        from: Some("1.0.0".into()),
        to: "1.1.0".into(),
        state: RecordState::Running,
        ..LockRecord::default()
    }
}

#[test]
fn free_held_failed_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    assert_eq!(inspect(&path).unwrap(), LockState::Free);
    let guard = LockGuard::acquire(&path, record()).unwrap();
    assert!(matches!(inspect(&path).unwrap(), LockState::Held(Some(_))));
    let second = LockGuard::acquire(&path, record()).unwrap_err();
    assert!(
        second.to_string().contains("upgrade in progress"),
        "{second}"
    );
    assert!(unlock(&path).is_err());
    guard.fail(Some("s"), "boom").unwrap();
    let state = inspect(&path).unwrap();
    assert!(matches!(&state, LockState::Failed(r) if r.error.as_deref() == Some("boom")));
    let again = LockGuard::acquire(&path, record()).unwrap_err();
    assert!(
        again.to_string().contains("failed at step 's': boom"),
        "{again}"
    );
    assert!(matches!(unlock(&path).unwrap(), LockState::Failed(_)));
    assert_eq!(inspect(&path).unwrap(), LockState::Free);

    std::fs::write(&path, serde_json::to_string(&record()).unwrap()).unwrap();
    assert!(matches!(inspect(&path).unwrap(), LockState::Stale(Some(_))));
    let stale = LockGuard::acquire(&path, record()).unwrap_err();
    assert!(stale.to_string().contains("process is gone"), "{stale}");
}

#[test]
fn empty_unheld_file_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    std::fs::write(&path, "").unwrap();
    assert_eq!(inspect(&path).unwrap(), LockState::Free);
    drop(LockGuard::acquire(&path, record()).unwrap());
    assert!(!path.exists());
}

#[test]
fn released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    drop(LockGuard::acquire(&path, record()).unwrap());
    assert!(!path.exists());
    assert_eq!(inspect(&path).unwrap(), LockState::Free);
}

fn not_regular(result: Result<impl std::fmt::Debug, LockError>, what: &str) {
    match result {
        Err(error @ LockError::NotRegular { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains(&format!(
                    "upgrade.lock is {what}, not a regular file: remove it"
                )),
                "{text}"
            );
        }
        other => panic!("expected {what} to be refused, got {other:?}"),
    }
}

#[test]
fn special_files_are_refused_never_opened_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    // Would block forever on a FIFO without O_NONBLOCK.
    not_regular(inspect(&path), "a FIFO");
    not_regular(LockGuard::acquire(&path, record()), "a FIFO");
    not_regular(unlock(&path), "a FIFO");
    std::fs::remove_file(&path).unwrap();

    std::fs::create_dir(&path).unwrap();
    not_regular(inspect(&path), "a directory");
    not_regular(LockGuard::acquire(&path, record()), "a directory");
    not_regular(unlock(&path), "a directory");
    assert!(path.is_dir());
}

#[cfg(unix)]
#[test]
fn symbolic_links_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    let dangling = outside.path().join("created-by-upgrader");
    std::os::unix::fs::symlink(&dangling, &path).unwrap();
    not_regular(inspect(&path), "a symbolic link");
    not_regular(LockGuard::acquire(&path, record()), "a symbolic link");
    not_regular(unlock(&path), "a symbolic link");
    assert!(!dangling.exists(), "the link's target was created");
    std::fs::remove_file(&path).unwrap();

    let empty = outside.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    std::os::unix::fs::symlink(&empty, &path).unwrap();
    not_regular(inspect(&path), "a symbolic link");
    not_regular(LockGuard::acquire(&path, record()), "a symbolic link");
    not_regular(unlock(&path), "a symbolic link");
    assert_eq!(std::fs::read(&empty).unwrap(), b"");
    assert!(path.symlink_metadata().unwrap().file_type().is_symlink());
    std::fs::remove_file(&path).unwrap();

    // Followed, it would be read without end.
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    not_regular(inspect(&path), "a symbolic link");
    not_regular(LockGuard::acquire(&path, record()), "a symbolic link");
    not_regular(unlock(&path), "a symbolic link");
}

#[test]
fn a_file_larger_than_any_record_is_corrupt_and_unlock_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    // Sparse: costs no disk, and must not be read whole.
    File::create(&path).unwrap().set_len(3 << 30).unwrap();
    for error in [
        inspect(&path).unwrap_err(),
        LockGuard::acquire(&path, record()).unwrap_err(),
    ] {
        assert!(matches!(error, LockError::Corrupt { size, .. } if size == 3 << 30));
        let text = error.to_string();
        assert!(text.contains("is 3221225472 bytes, more than any lock record (65536 bytes): it is corrupt; look at it, then run `upgrader unlock` to remove it"), "{text}");
    }
    assert_eq!(unlock(&path).unwrap(), LockState::Stale(None));
    assert!(!path.exists());
}

#[test]
fn a_long_error_is_clipped_so_the_record_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    let guard = LockGuard::acquire(&path, record()).unwrap();
    guard.fail(Some("s"), &"x".repeat(1 << 20)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < MAX_RECORD_BYTES);
    let LockState::Failed(found) = inspect(&path).unwrap() else {
        panic!("not failed")
    };
    assert!(found.error.unwrap().ends_with("… (1048576 bytes in all)"));
}

#[test]
fn a_look_that_opened_a_file_a_finishing_run_removed_finds_the_lock_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    let mut running = Some(LockGuard::acquire(&path, record()).unwrap());
    // The run finishes (removes the file, then releases it) between our open and lock.
    let state = inspect_with(&path, &mut || drop(running.take())).unwrap();
    assert_eq!(state, LockState::Free);
    assert!(running.is_none());
}

#[test]
fn unlock_never_removes_a_newer_runs_live_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOCK_FILE);
    std::fs::write(&path, serde_json::to_string(&record()).unwrap()).unwrap();
    let mut newer = None;
    // Between unlock's open and lock: someone clears the stale file and a new run starts.
    let error = unlock_with(&path, &mut || {
        if newer.is_none() {
            std::fs::remove_file(&path).unwrap();
            newer = Some(LockGuard::acquire(&path, record()).unwrap());
        }
    })
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("refusing to unlock: upgrade in progress"),
        "{error}"
    );
    assert!(path.exists());
    assert!(matches!(inspect(&path).unwrap(), LockState::Held(Some(_))));
    drop(newer);
    assert_eq!(inspect(&path).unwrap(), LockState::Free);
}
