#!/usr/bin/env python3
"""Times upgrader's SQLite backup against the sqlite3 shell's `.backup`, in the same run.

A database of about --megabytes MB (one table of random blobs) in a temporary directory
on the same disk as the backups; a project of one-row steps, each run applying exactly
one (VERSION is raised by one step before each run, so no copy of the database is needed
between runs). Each round, in an order that rotates:

- `upgrader run` (one step, with its backup), the backup then removed;
- `upgrader run --no-backup` (one step);
- `sqlite3 DB ".backup FILE"`, the file then removed.

upgrader's backup costs the first minus the second (paired within the round); the target
is that cost ≤ 1.1 × sqlite3's `.backup`. Everything is synced to disk before each timed
command, so one command's write-back does not land in the next one's time. Wall time on
a shared disk varies by tens of percent from one copy to the next; the CPU time (user +
system, of the command and its children) is printed too, and varies far less.

Usage: benches/backup_sqlite.py [--megabytes 500] [--rounds 9] [--dir DIR]
`--dir /dev/shm` takes the disk out: what is left is the copying itself.
Needs a release build (it runs `cargo build --release` itself, unless
$UPGRADER_BENCH_BINARY names the binary to time) and the sqlite3 shell on PATH
(`apt-get install -y sqlite3`).
"""
import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build  # noqa: E402

BLOB = 16000


def make_database(path, megabytes):
    """About `megabytes` MB of incompressible rows, written without a journal or syncs."""
    started = time.perf_counter()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    connection.execute("CREATE TABLE marks (step INTEGER PRIMARY KEY)")
    rows = megabytes * 1_000_000 // BLOB
    connection.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        "INSERT INTO blobs SELECT x, randomblob(?) FROM c", (rows, BLOB))
    connection.commit()
    connection.close()
    size = os.path.getsize(path)
    print(f"database: {size / 1e6:.0f} MB ({rows} rows of {BLOB} random bytes) in "
          f"{time.perf_counter() - started:.1f} s")
    return size


def measured(command):
    """(wall seconds, CPU seconds: user + system) of `command`."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_project(directory, steps):
    lines = ['<upgrade project="bench" initial-version="1.0.0">']
    for index in range(steps):
        lines.append(
            f'  <step name="s{index}" from="1.{index}.0" to="1.{index + 1}.0">'
            f'<sql>INSERT INTO marks (step) VALUES ({index});</sql></step>')
    lines.append("</upgrade>")
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write("\n".join(lines) + "\n")


class Project:
    """A project whose database is one step behind its code before every run."""

    def __init__(self, directory, db):
        self.directory = directory
        self.db = db
        self.version = 0
        self.backups = os.path.join(directory, "updates", "Updates_Backups")

    def run(self, *options):
        self.version += 1
        with open(os.path.join(self.directory, "VERSION"), "w") as f:
            f.write(f"1.{self.version}.0\n")
        command = [BINARY, "--project", self.directory, "--database", f"sqlite://{self.db}",
                   *options, "run"]
        elapsed = measured(command)
        made = os.listdir(self.backups) if os.path.isdir(self.backups) else []
        assert len(made) == (0 if "--no-backup" in options else 1), made
        if made:
            size = os.path.getsize(os.path.join(self.backups, made[0]))
            assert size == os.path.getsize(self.db), (size, os.path.getsize(self.db))
        for name in made:
            os.remove(os.path.join(self.backups, name))
        return elapsed


def sqlite3_backup(db, target):
    elapsed = measured(["sqlite3", db, f".backup '{target}'"])
    assert os.path.getsize(target) == os.path.getsize(db)
    os.remove(target)
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--dir", default=None,
                        help="where the database and its backups go (default: the temp dir)")
    args = parser.parse_args()
    if not shutil.which("sqlite3"):
        sys.exit("sqlite3 is not installed: apt-get install -y sqlite3")
    build()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        db = os.path.join(directory, "big.db")
        make_database(db, args.megabytes)
        make_project(directory, 2 * args.rounds + 1)
        project = Project(directory, db)
        # The first run creates upgrader's own tables: every timed run then does the same.
        project.run("--no-backup")
        target = os.path.join(directory, "shell-backup.db")
        backed, plain, shell = [], [], []
        jobs = [
            lambda: backed.append(project.run()),
            lambda: plain.append(project.run("--no-backup")),
            lambda: shell.append(sqlite3_backup(db, target)),
        ]
        # Rotating the order: the machine's speed drifts, and a round sees the same drift.
        for round_index in range(args.rounds):
            for index in range(3):
                jobs[(round_index + index) % 3]()
        print(f"{args.rounds} rounds; load average {load:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after")
        for index, what in ((0, "wall"), (1, "CPU")):
            report(what, [b[index] for b in backed], [p[index] for p in plain],
                   [s[index] for s in shell])


def report(what, backed, plain, shell):
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    costs = [b - p for b, p in zip(backed, plain)]
    cost, theirs = ms(costs), ms(shell)
    paired = statistics.median(c / s for c, s in zip(costs, shell))
    print(f"{what}: upgrader run with backup {ms(backed):.0f} ms, --no-backup {ms(plain):.0f} ms, "
          f"so the backup costs {cost:.0f} ms (median of paired differences); "
          f"sqlite3 .backup {theirs:.0f} ms")
    print(f"  ratio {cost / theirs:.2f} (medians), median of paired ratios {paired:.2f}, "
          f"target <= 1.10: {'met' if max(cost / theirs, paired) <= 1.1 else 'MISSED'}")

if __name__ == "__main__":
    main()
