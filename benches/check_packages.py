#!/usr/bin/env python3
"""`upgrader check` of an application of 20 packages, all current, against `check` of a
single project, whole process, in the same run (issue 10's target: at most 1.2 times).

Both applications have the same shape per project (an install and 10 steps); the first
is one project, the second a root with 19 packages listed by <package dir>. Both are
installed first; then `check` is timed on each, alternating the order every round, and
the ratio of each round's pair is reported (median, and the median of the per-round
ratios).

Usage: benches/check_packages.py [--packages 20] [--rounds 200] [--database URL_PREFIX]
With --database (a PostgreSQL or MySQL URL to a server, without the database name, e.g.
postgres://postgres@127.0.0.1:5432/), two databases named upgrader_bench_one and
upgrader_bench_many are created on it and used instead of the embedded SQLite files.
Needs a release build (it runs `cargo build --release` itself, unless
$UPGRADER_BENCH_BINARY names the binary to time).
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("UPGRADER_BENCH_BINARY") or os.path.join(ROOT, "target", "release", "upgrader")
STEPS = 10


def build():
    if not os.environ.get("UPGRADER_BENCH_BINARY"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


def write_project(directory, name, packages=()):
    os.makedirs(directory, exist_ok=True)
    lines = [f'<upgrade project="{name}" initial-version="1.0.0">']
    lines += [f'  <package dir="{p}"/>' for p in packages]
    lines.append(
        f"  <install><sql>CREATE TABLE {name}_t (id INTEGER PRIMARY KEY, v VARCHAR(20));</sql></install>"
    )
    for index in range(STEPS):
        lines.append(
            f'  <step name="{name}-s{index}" from="1.{index}.0" to="1.{index + 1}.0">'
            f"<sql>INSERT INTO {name}_t (id, v) VALUES ({index}, 'x');</sql></step>"
        )
    lines.append("</upgrade>")
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(directory, "VERSION"), "w") as f:
        f.write(f"1.{STEPS}.0\n")


def command(directory, database):
    cmd = [BINARY, "--project", directory]
    if database:
        cmd += ["--database", database]
    return cmd


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def create_database(prefix, name):
    if prefix.startswith("postgres"):
        subprocess.run(["psql", prefix + "postgres", "-qc", f"DROP DATABASE IF EXISTS {name}"], check=True)
        subprocess.run(["psql", prefix + "postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
    else:
        raise SystemExit("--database: only postgres:// prefixes are supported by this script")
    return prefix + name


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--packages", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--database", help="a postgres:// URL prefix ending in /")
    args = parser.parse_args()
    build()
    with tempfile.TemporaryDirectory() as tmp:
        one = os.path.join(tmp, "one")
        many = os.path.join(tmp, "many")
        write_project(one, "solo")
        dirs = [f"modules/m{i}" for i in range(args.packages - 1)]
        write_project(many, "core", dirs)
        for i, d in enumerate(dirs):
            write_project(os.path.join(many, d), f"m{i}")
        db_one = db_many = None
        if args.database:
            db_one = create_database(args.database, "upgrader_bench_one")
            db_many = create_database(args.database, "upgrader_bench_many")
        for directory, db in ((one, db_one), (many, db_many)):
            subprocess.run(command(directory, db) + ["run"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(command(directory, db) + ["check"], check=True, stdout=subprocess.DEVNULL)
        check_one = command(one, db_one) + ["check"]
        check_many = command(many, db_many) + ["check"]
        for _ in range(10):  # warm the page cache and the server
            timed(check_one)
            timed(check_many)
        ours_one, ours_many, ratios = [], [], []
        for round_ in range(args.rounds):
            if round_ % 2:
                a = timed(check_one)
                b = timed(check_many)
            else:
                b = timed(check_many)
                a = timed(check_one)
            ours_one.append(a)
            ours_many.append(b)
            ratios.append(b / a)
        m1 = statistics.median(ours_one) * 1000
        m2 = statistics.median(ours_many) * 1000
        print(f"check, 1 project:           median {m1:.2f} ms")
        print(f"check, {args.packages} packages:        median {m2:.2f} ms")
        print(f"ratio of medians {m2 / m1:.2f}x; median of paired ratios {statistics.median(ratios):.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()
