#!/usr/bin/env python3
"""Times the whole upgrader CLI against the sqlite3 command-line client, in the same run.

1. `upgrader run` applying N small steps (one SQL file each: a CREATE TABLE and an
   INSERT) to an existing database, versus `sqlite3` running the same SQL concatenated
   in one transaction on a copy of the same database.
2. `upgrader check` on an up-to-date database (the demo project), whole process.

Usage: benches/cli_vs_sqlite3.py [--steps 1000] [--rounds 15] [--check-rounds 200] [--check-only]
                                 [--check-repeat 1]
`--check-repeat N` repeats the check comparison N times and also prints the median of the
N paired ratios: on a shared machine one batch of 200 pairs still moves by a few percent.
Needs a release build (it runs `cargo build --release` itself, unless
$UPGRADER_BENCH_BINARY names the binary to time) and sqlite3 on PATH.
"""
import argparse
import re
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# $UPGRADER_BENCH_BINARY times another build (an older commit's, to compare) instead.
BINARY = os.environ.get("UPGRADER_BENCH_BINARY") or os.path.join(ROOT, "target", "release", "upgrader")


def build():
    if not os.environ.get("UPGRADER_BENCH_BINARY"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


def step_sql(index):
    return (
        f"CREATE TABLE t{index} (id INTEGER PRIMARY KEY, v TEXT NOT NULL);\n"
        f"INSERT INTO t{index} (id, v) VALUES (1, 'step {index}; value');\n"
    )


def make_project(directory, steps):
    os.makedirs(os.path.join(directory, "scripts"))
    lines = ['<upgrade project="bench" initial-version="1.0.0">']
    for index in range(steps):
        name = f"scripts/step{index}.sql"
        with open(os.path.join(directory, name), "w") as f:
            f.write(step_sql(index))
        lines.append(
            f'  <step name="s{index}" from="1.{index}.0" to="1.{index + 1}.0">'
            f'<sql file="{name}"/></step>'
        )
    lines.append("</upgrade>")
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(directory, "VERSION"), "w") as f:
        f.write(f"1.{steps}.0\n")
    with open(os.path.join(directory, "all.sql"), "w") as f:
        f.write("BEGIN;\n" + "".join(step_sql(i) for i in range(steps)) + "COMMIT;\n")
    base = os.path.join(directory, "base.db")
    connection = sqlite3.connect(base)
    connection.execute("CREATE TABLE existing (x INTEGER)")
    connection.commit()
    connection.close()
    return base


def timed(command, **kwargs):
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - start


def apply_bench(args):
    with tempfile.TemporaryDirectory() as directory:
        base = make_project(directory, args.steps)
        db = os.path.join(directory, "run.db")
        ours, theirs = [], []
        for _ in range(args.rounds):
            shutil.copy(base, db)
            ours.append(timed([BINARY, "--project", directory, "--database", f"sqlite://{db}", "run"]))
            connection = sqlite3.connect(db)
            version = connection.execute(
                "SELECT version FROM upgrader_version WHERE project = 'bench'"
            ).fetchone()[0]
            applied = connection.execute(
                "SELECT count(*) FROM upgrader_history WHERE success = 1"
            ).fetchone()[0]
            connection.close()
            assert version == f"1.{args.steps}.0" and applied == args.steps, (version, applied)
            shutil.copy(base, db)
            with open(os.path.join(directory, "all.sql")) as sql:
                theirs.append(timed(["sqlite3", db], stdin=sql))
        ours_ms = statistics.median(ours) * 1000
        theirs_ms = statistics.median(theirs) * 1000
        print(f"apply {args.steps} steps: upgrader run {ours_ms:.1f} ms, "
              f"sqlite3 one transaction {theirs_ms:.1f} ms, "
              f"ratio {ours_ms / theirs_ms:.2f} (median of {args.rounds})")
        print(f"  upgrader overhead per step: {(ours_ms - theirs_ms) / args.steps * 1000:.0f} us")


def check_bench(args):
    with tempfile.TemporaryDirectory() as directory:
        names = ["VERSION", "upgrade.xml", "scripts"] + (["modules"] if args.with_module else [])
        for name in names:
            source = os.path.join(ROOT, name)
            target = os.path.join(directory, name)
            (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, target)
        if not args.with_module:
            # The shop alone, as the target was set for (the demo's module doubles the
            # files `check` reads; --with-module measures the demo as it is).
            manifest = os.path.join(directory, "upgrade.xml")
            with open(manifest) as f:
                text = f.read()
            with open(manifest, "w") as f:
                f.write(re.sub(r"\s*<package [^>]*/>", "", text))
        subprocess.run([BINARY, "--project", directory, "run"], check=True, stdout=subprocess.DEVNULL)
        db = os.path.join(directory, "upgrader.db")
        # Alternating, and comparing each pair: the machine's speed drifts.
        checks, selects = [], []
        for _ in range(args.check_rounds):
            checks.append(timed([BINARY, "--project", directory, "check"]))
            selects.append(timed(["sqlite3", db, "select 1"]))
        paired = statistics.median(a / b for a, b in zip(checks, selects))
        print(f"upgrader check (current demo): median {statistics.median(checks) * 1000:.2f} ms; "
              f"sqlite3 'select 1': {statistics.median(selects) * 1000:.2f} ms; "
              f"median of paired ratios {paired:.3f} ({args.check_rounds} pairs)")
        return paired


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--check-rounds", type=int, default=200)
    parser.add_argument("--check-only", action="store_true", help="skip the apply benchmark")
    parser.add_argument("--with-module", action="store_true",
                        help="check the demo with its module (two projects), not the shop alone")
    parser.add_argument("--check-repeat", type=int, default=1,
                        help="repeat the check comparison and report the median ratio")
    args = parser.parse_args()
    if not shutil.which("sqlite3"):
        sys.exit("sqlite3 is not installed: apt-get install -y sqlite3")
    build()
    if not args.check_only:
        apply_bench(args)
    ratios = [check_bench(args) for _ in range(args.check_repeat)]
    if len(ratios) > 1:
        print(f"check: median of {len(ratios)} paired ratios {statistics.median(ratios):.3f} "
              f"(each {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
