#!/usr/bin/env python3
"""Times what the backup adds to `upgrader run` on PostgreSQL against `pg_dump` alone.

On a throwaway server (cli_vs_psql's), each round, in an order that rotates, on a fresh
database each:

- `upgrader run` of N steps (cli_vs_psql's project), with its backup (`pg_dump
  --format=custom` run by upgrader under the upgrade lock), the backup then removed;
- the same run with `--no-backup`;
- `pg_dump --format=custom` of a fresh database: what the run backs up (it dumps before
  its first statement), with the same pg_dump upgrader picks (the first on PATH, else
  the newest /usr/lib/postgresql/*/bin).

Target: run+backup ≤ run + pg_dump × 1.05. Both readings are printed: the medians, and
the backup's extra cost (run+backup − run, paired within the round) next to pg_dump's
own time.

Usage: benches/backup_postgres.py [--steps 1000] [--rounds 11]
$UPGRADER_BENCH_BINARY times another build instead of a fresh release build.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build, make_project, timed  # noqa: E402
from cli_vs_psql import Server, pg_binary  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    build()
    pg_dump = shutil.which("pg_dump") or pg_binary("pg_dump")
    load = os.getloadavg()[0]
    server = Server()
    try:
        with tempfile.TemporaryDirectory() as directory:
            os.chmod(directory, 0o755)
            make_project(directory, args.steps)
            backups = os.path.join(directory, "updates", "Updates_Backups")
            dump_file = os.path.join(directory, "plain.pgdump")

            def run(*options):
                name = server.fresh()
                elapsed = timed([BINARY, "--project", directory, "--database",
                                 server.url(name), *options, "run"])
                made = os.listdir(backups) if os.path.isdir(backups) else []
                assert len(made) == (0 if options else 1), made
                for file in made:
                    with open(os.path.join(backups, file), "rb") as f:
                        assert f.read(5) == b"PGDMP", file
                    os.remove(os.path.join(backups, file))
                return elapsed

            def dump():
                name = server.fresh()
                elapsed = timed([pg_dump, "-h", "127.0.0.1", "-p", str(server.port), "-U",
                                 "bench", "-d", name, "--format=custom", "--no-password",
                                 "--file", dump_file])
                os.remove(dump_file)
                return elapsed

            backed, plain, dumps = [], [], []
            jobs = [
                lambda: backed.append(run()),
                lambda: plain.append(run("--no-backup")),
                lambda: dumps.append(dump()),
            ]
            # One of each first, not counted: the server's and the page cache's warm-up.
            for job in jobs:
                job()
            del backed[:], plain[:], dumps[:]
            for round_index in range(args.rounds):
                for index in range(3):
                    jobs[(round_index + index) % 3]()
    finally:
        server.stop()
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    extra = [b - p for b, p in zip(backed, plain)]
    budget = ms(plain) + ms(dumps) * 1.05
    print(f"{args.steps} steps on PostgreSQL, {args.rounds} rounds, pg_dump: {pg_dump}")
    print(f"  upgrader run with backup {ms(backed):.1f} ms; --no-backup {ms(plain):.1f} ms; "
          f"pg_dump --format=custom {ms(dumps):.1f} ms (medians)")
    print(f"  target run+backup <= run + pg_dump x 1.05: {ms(backed):.1f} <= {budget:.1f} ms: "
          f"{'met' if ms(backed) <= budget else 'MISSED'}")
    print(f"  the backup's extra cost (paired differences): median {ms(extra):.1f} ms = "
          f"{ms(extra) / ms(dumps):.2f} x pg_dump alone "
          f"({ms(extra) - ms(dumps):+.1f} ms over it)")
    print(f"  load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
