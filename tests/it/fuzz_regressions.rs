//! Every input in `fuzz/regressions/<target>/` (crashes the fuzz targets found, and fixed)
//! replayed through the same checks the target runs (`fuzz/checks.rs`), on stable, so a
//! fixed crash stays fixed without nightly or cargo-fuzz.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

#[test]
fn every_fuzz_regression_input_passes_its_target_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (target, check) in checks::TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{} fails its {target} check",
                file.display()
            );
            replayed += 1;
        }
    }
    // Every folder is a target's name: a misnamed one would be silently skipped.
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            checks::TARGETS.iter().any(|(target, _)| name == *target),
            "fuzz/regressions/{} is not a fuzz target",
            name.to_string_lossy()
        );
    }
    assert!(
        replayed > 0,
        "no regression inputs under {}",
        root.display()
    );
}
