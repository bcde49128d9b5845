#!/usr/bin/env python3
"""The cost of a plugin step, per step: N steps that each call a plugin method doing
nothing, versus N steps that each run one trivial SQL statement (`SELECT 1`), both on a
fresh SQLite database, whole `upgrader run` process, in the same run.

per-step overhead = (median plugin run - median SQL run) / N

The plugin is built here with rustc -O against the upgrader-plugin crate, as a plugin
author's cdylib would be. Usage: benches/plugin_overhead.py [--steps 1000] [--rounds 15]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, ROOT, timed  # noqa: E402

NOOP = """
use upgrader_plugin::{export_steps, Result, Run};
fn noop(_run: &mut Run) -> Result<()> { Ok(()) }
export_steps!(noop);
"""


def build_plugin(directory):
    rustc = os.environ.get("RUSTC", "rustc")
    sdk = os.path.join(ROOT, "crates", "upgrader-plugin", "src", "lib.rs")
    subprocess.run([rustc, "--edition", "2021", "-O", "--crate-type", "rlib", "--crate-name",
                    "upgrader_plugin", sdk, "--out-dir", directory], check=True)
    source = os.path.join(directory, "bench_steps.rs")
    with open(source, "w") as f:
        f.write(NOOP)
    plugins = os.path.join(directory, "plugins")
    os.makedirs(plugins)
    subprocess.run([rustc, "--edition", "2021", "-O", "--crate-type", "cdylib", "--crate-name",
                    "bench_steps", "--extern",
                    f"upgrader_plugin={os.path.join(directory, 'libupgrader_plugin.rlib')}",
                    "-L", directory, source, "--out-dir", plugins], check=True)
    return plugins


def make_project(directory, steps, action, plugins=None):
    os.makedirs(directory)
    if plugins:
        os.symlink(plugins, os.path.join(directory, "plugins"))
    lines = ['<upgrade project="bench" initial-version="1.0.0">']
    for index in range(steps):
        lines.append(f'  <step name="s{index}" from="1.{index}.0" to="1.{index + 1}.0">{action}</step>')
    lines.append("</upgrade>")
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(directory, "VERSION"), "w") as f:
        f.write(f"1.{steps}.0\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as work:
        plugins = build_plugin(work)
        plugin_project = os.path.join(work, "plugin")
        sql_project = os.path.join(work, "sql")
        make_project(plugin_project, args.steps,
                     '<plugin library="bench_steps" method="noop"/>', plugins)
        make_project(sql_project, args.steps, "<sql>SELECT 1;</sql>")
        times = {"plugin": [], "sql": []}
        for round_index in range(args.rounds):
            order = ["plugin", "sql"] if round_index % 2 == 0 else ["sql", "plugin"]
            for kind in order:
                project = plugin_project if kind == "plugin" else sql_project
                database = os.path.join(project, "upgrader.db")
                if os.path.exists(database):
                    os.remove(database)
                # A database with a table, so that the steps run (not the install).
                subprocess.run(["sqlite3", database, "CREATE TABLE existing (x INTEGER)"],
                               check=True)
                times[kind].append(timed([BINARY, "--project", project, "run"]))
        plugin_ms = statistics.median(times["plugin"]) * 1000
        sql_ms = statistics.median(times["sql"]) * 1000
        per_step_us = (plugin_ms - sql_ms) * 1000 / args.steps
        print(f"{args.steps} plugin steps (noop): {plugin_ms:.1f} ms; {args.steps} SQL steps "
              f"(SELECT 1): {sql_ms:.1f} ms; plugin step overhead {per_step_us:.1f} us per step "
              f"(median of {args.rounds})")


if __name__ == "__main__":
    main()
