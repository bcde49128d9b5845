//! Builds the demo project's step plugin (plugins/demo-steps) so that `cargo run -- run`
//! on a fresh clone has it: a cdylib is not something a binary can depend on, so a
//! nested cargo builds it into target/plugins/, which upgrader searches when developing.
//! Outside this repository (the crate used as a dependency) there is nothing to build.
//!
//! It also links the `upgrader` binary as a position-dependent executable on Linux: a
//! position-independent one spends a third of its start-up page faults applying 20,000
//! relocations (copying 90 pages of pointer tables), which made `check` 1.3x
//! `sqlite3 DB 'select 1'` instead of 1.1x. Libraries, heap and stack are still placed
//! at random; a packager whose policy requires PIE sets `UPGRADER_PIE=1`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=UPGRADER_PIE");
    let target = |name: &str| std::env::var(name).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
        && std::env::var_os("UPGRADER_PIE").is_none()
    {
        println!("cargo::rustc-link-arg-bin=upgrader=-no-pie");
    }
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    let plugin = root.join("plugins/demo-steps/Cargo.toml");
    for watched in [
        "plugins/demo-steps/src",
        "plugins/demo-steps/Cargo.toml",
        "crates/upgrader-plugin/src",
    ] {
        println!("cargo::rerun-if-changed={watched}");
    }
    println!("cargo::rerun-if-env-changed=UPGRADER_SKIP_DEMO_PLUGIN");
    if !plugin.is_file() || std::env::var_os("UPGRADER_SKIP_DEMO_PLUGIN").is_some() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "--manifest-path"])
        .arg(&plugin)
        // Its own target directory: the outer build holds the lock on this one.
        .arg("--target-dir")
        .arg(root.join("target/plugins"));
    if release {
        command.arg("--release");
    }
    // What the outer cargo set up for this build script (clippy's wrapper, flags for
    // another target) is not for the plugin.
    for variable in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
    ] {
        command.env_remove(variable);
    }
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => println!(
            "cargo::warning=building the demo plugin (plugins/demo-steps) failed ({status}); the demo's plugin steps will not find it"
        ),
        Err(error) => println!("cargo::warning=cannot run cargo to build the demo plugin: {error}"),
    }
}
