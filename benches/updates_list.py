#!/usr/bin/env python3
"""Times `upgrader updates list` (and `--json`) over --packages pending packages.

A project at version 1.0.0 whose SQLite database is at 1.0.0 too, and --packages small
packages in `updates/Updates_Pending/` (versions 1.1.0, 1.1.1, …, each requiring 1.0.0),
each with `update.xml` (notes), `files/VERSION`, `files/upgrade.xml` (a manifest with
one step per version up to its own, so each package's database steps are planned from
its own manifest) and two small files. Every listing reads each package's central
directory and update.xml, parses and plans its manifest, and hashes the whole zip.

The whole process is timed (`updates list`, then `--json`, alternating), --rounds times
each; the target is a median under 50 ms for both. `upgrader --version` is timed the
same way, as the floor of starting the process at all.

Usage: benches/updates_list.py [--packages 100] [--rounds 41]
Needs a release build (it runs `cargo build --release` itself, unless
$UPGRADER_BENCH_BINARY names the binary to time).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build  # noqa: E402


def manifest(steps):
    lines = ['<upgrade project="bench" initial-version="1.0.0">',
             "  <install><sql>CREATE TABLE marks (step INTEGER PRIMARY KEY);</sql></install>",
             '  <step name="s0" from="1.0.0" to="1.1.0">'
             "<sql>INSERT INTO marks (step) VALUES (0);</sql></step>"]
    for index in range(1, steps):
        lines.append(f'  <step name="s{index}" from="1.1.{index - 1}" to="1.1.{index}">'
                     f"<sql>INSERT INTO marks (step) VALUES ({index});</sql></step>")
    lines.append("</upgrade>")
    return "\n".join(lines) + "\n"


def make_project(directory, packages):
    with open(os.path.join(directory, "VERSION"), "w") as f:
        f.write("1.0.0\n")
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write(manifest(1))
    pending = os.path.join(directory, "updates", "Updates_Pending")
    os.makedirs(pending)
    for index in range(packages):
        version = f"1.1.{index}"
        with zipfile.ZipFile(os.path.join(pending, f"bench-{version}.zip"), "w",
                             zipfile.ZIP_DEFLATED) as z:
            z.writestr("update.xml",
                       f'<update project="bench" version="{version}" requires="1.0.0">\n'
                       f"  <notes>Release {version}: small fixes &amp; one new table step\n"
                       "  (a second line of notes)</notes>\n</update>\n")
            z.writestr("files/VERSION", version + "\n")
            z.writestr("files/upgrade.xml", manifest(index + 1))
            z.writestr("files/src/app.py", f"VERSION = {version!r}\n" * 50)
            z.writestr("files/static/style.css", "body { margin: 0 }\n" * 100)


def timed(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--packages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    build()
    with tempfile.TemporaryDirectory() as directory:
        make_project(directory, args.packages)
        database = f"sqlite://{os.path.join(directory, 'bench.db')}"
        base = [BINARY, "--project", directory, "--database", database]
        subprocess.run(base + ["--no-backup", "run"], check=True, stdout=subprocess.DEVNULL)
        listed = json.loads(subprocess.run(base + ["--json", "updates", "list"], check=True,
                                           capture_output=True, text=True).stdout)
        assert len(listed) == args.packages, len(listed)
        assert all(not p["problems"] for p in listed), [p["problems"] for p in listed]
        assert len(listed[-1]["database_steps"]) == args.packages, listed[-1]
        load = os.getloadavg()[0]
        human, machine, floor = [], [], []
        for _ in range(args.rounds):
            human.append(timed(base + ["updates", "list"]))
            machine.append(timed(base + ["--json", "updates", "list"]))
            floor.append(timed([BINARY, "--version"]))
        print(f"{args.packages} pending packages, {args.rounds} rounds; load average "
              f"{load:.2f} before, {os.getloadavg()[0]:.2f} after")
        for what, values in (("updates list", human), ("updates list --json", machine),
                             ("--version (process start)", floor)):
            median = statistics.median(values) * 1000
            target = "" if what.startswith("--") else \
                f", target < 50 ms: {'met' if median < 50 else 'MISSED'}"
            print(f"{what}: median {median:.1f} ms, min {min(values) * 1000:.1f} ms, "
                  f"max {max(values) * 1000:.1f} ms{target}")


if __name__ == "__main__":
    main()
