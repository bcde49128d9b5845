#!/usr/bin/env python3
"""Times `upgrader backups` over a folder of 1,000 backups: target < 50 ms wall per call.

The folder holds --files empty files named as upgrader names its backups
(`db-shop-1.2.3-20261202T000000Z.sqlite`, with varied versions, stamps and kinds, some
with a `-n` counter) and a few files that are not backups. Each round times, alternating,
`upgrader backups` and `upgrader backups --json` there, and `upgrader backups` of a
project with an empty folder (the process's own cost, for reference).

Usage: benches/backups_list.py [--files 1000] [--rounds 30]
$UPGRADER_BENCH_BINARY times another build instead of a fresh release build.
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build, timed  # noqa: E402


def make_project(directory):
    os.makedirs(os.path.join(directory, "updates", "Updates_Backups"))
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write('<upgrade project="shop" initial-version="1.0.0">\n'
                '  <step name="s" from="1.0.0" to="1.1.0"><sql>SELECT 1;</sql></step>\n'
                '</upgrade>\n')
    with open(os.path.join(directory, "VERSION"), "w") as f:
        f.write("1.1.0\n")


def fill(directory, files):
    folder = os.path.join(directory, "updates", "Updates_Backups")
    rng = random.Random(11)
    kinds = ["sqlite", "pgdump", "sql.gz"]
    names = set()
    while len(names) < files:
        version = rng.choice([f"{rng.randint(0, 3)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
                              f"1.{rng.randint(0, 9)}.0-RC{rng.randint(1, 3)}", "none"])
        stamp = (f"20{rng.randint(24, 26)}{rng.randint(1, 12):02}{rng.randint(1, 28):02}T"
                 f"{rng.randint(0, 23):02}{rng.randint(0, 59):02}{rng.randint(0, 59):02}Z")
        counter = f"-{rng.randint(2, 4)}" if rng.random() < 0.05 else ""
        project = rng.choice(["shop", "shop", "shop", "demo-shop"])
        names.add(f"db-{project}-{version}-{stamp}{counter}.{rng.choice(kinds)}")
    for name in names | {"notes.txt", "app-shop-1.0.0-20261202T000000Z.zip"}:
        open(os.path.join(folder, name), "w").close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    build()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as full, tempfile.TemporaryDirectory() as empty:
        make_project(full)
        make_project(empty)
        fill(full, args.files)
        listed = subprocess.run([BINARY, "--project", full, "--json", "backups"], check=True,
                                stdout=subprocess.PIPE, text=True).stdout
        count = listed.count('"file"')
        assert count == args.files, (count, args.files)
        human, json, baseline = [], [], []
        for _ in range(args.rounds):
            human.append(timed([BINARY, "--project", full, "backups"]))
            json.append(timed([BINARY, "--project", full, "--json", "backups"]))
            baseline.append(timed([BINARY, "--project", empty, "backups"]))
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    print(f"upgrader backups, {args.files} backups in the folder: {ms(human):.1f} ms "
          f"(--json {ms(json):.1f} ms; an empty folder {ms(baseline):.1f} ms); "
          f"medians of {args.rounds}, target < 50 ms: "
          f"{'met' if max(ms(human), ms(json)) < 50 else 'MISSED'}")
    print(f"  max {max(human) * 1000:.1f} ms; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
