#!/usr/bin/env python3
"""Times what the backup adds to `upgrader run` on PostgreSQL against `pg_dump` alone.

On a throwaway server (cli_vs_psql's), each round, in an order that rotates, on a fresh
database each:

- `upgrader run` of N steps (cli_vs_psql's project), with its backup (`pg_dump
  --format=custom` run by upgrader under the upgrade lock), the backup then removed;
- the same run with `--no-backup`;
- `pg_dump --format=custom` of a fresh database: what the run backs up (it dumps before
  its first statement), with the same pg_dump upgrader picks (the first real one on
  PATH, else the newest /usr/lib/postgresql/*/bin; Debian's pg_wrapper last).

Target: run+backup ≤ run + pg_dump × 1.05. Both readings are printed: the medians, and
the backup's extra cost (run+backup − run, paired within the round) next to pg_dump's
own time; in wall time, and in CPU time of the client processes (upgrader with its
pg_dump, or pg_dump alone; the server's work is not in it).

A 1,000-step run varies by more than a dump takes on a shared machine, so the same
comparison follows with a one-step run (--small-rounds), which prices the backup itself.

Usage: benches/backup_postgres.py [--steps 1000] [--rounds 15] [--small-rounds 31]
$UPGRADER_BENCH_BINARY times another build instead of a fresh release build.
"""
import argparse
import glob
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build, make_project, timed  # noqa: E402
from cli_vs_psql import Server, pg_binary  # noqa: E402


def measured(command):
    """(wall seconds, CPU seconds: user + system of the command and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare(server, pg_dump, steps, rounds):
    """Interleaved rounds of run+backup, run --no-backup and pg_dump; prints the figures."""
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        make_project(directory, steps)
        backups = os.path.join(directory, "updates", "Updates_Backups")
        dump_file = os.path.join(directory, "plain.pgdump")

        def run(*options):
            name = server.fresh()
            elapsed = measured([BINARY, "--project", directory, "--database",
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
            elapsed = measured([pg_dump, "-h", "127.0.0.1", "-p", str(server.port), "-U",
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
        # Rotating the order: the machine's speed drifts, and a round sees the same drift.
        for round_index in range(rounds):
            for index in range(3):
                jobs[(round_index + index) % 3]()
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    print(f"{steps} step(s), {rounds} rounds:")
    for index, what in ((0, "wall"), (1, "CPU of the client processes")):
        b, p, d = ([x[index] for x in xs] for xs in (backed, plain, dumps))
        extra = [x - y for x, y in zip(b, p)]
        budget = ms(p) + ms(d) * 1.05
        print(f"  {what}: upgrader run with backup {ms(b):.1f} ms; --no-backup {ms(p):.1f} ms; "
              f"pg_dump --format=custom {ms(d):.1f} ms (medians)")
        print(f"    run+backup <= run + pg_dump x 1.05: {ms(b):.1f} <= {budget:.1f} ms: "
              f"{'met' if ms(b) <= budget else 'MISSED'}; the backup's extra cost "
              f"(median of paired differences) {ms(extra):.1f} ms = "
              f"{ms(extra) / ms(d):.2f} x pg_dump alone ({ms(extra) - ms(d):+.1f} ms)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--small-rounds", type=int, default=31,
                        help="rounds of the one-step comparison (0: skip it)")
    args = parser.parse_args()
    build()
    # The pg_dump upgrader runs: the first real one on PATH, else the newest server
    # package's; Debian's pg_wrapper (a Perl dispatcher) only as a last resort.
    on_path = shutil.which("pg_dump")
    if on_path and os.path.basename(os.path.realpath(on_path)) == "pg_wrapper":
        on_path = None
    packaged = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), key=lambda p: int(p.split("/")[4]))
    pg_dump = on_path or (packaged[-1] if packaged else pg_binary("pg_dump"))
    load = os.getloadavg()[0]
    print(f"pg_dump: {pg_dump}")
    server = Server()
    try:
        compare(server, pg_dump, args.steps, args.rounds)
        if args.small_rounds:
            compare(server, pg_dump, 1, args.small_rounds)
    finally:
        server.stop()
    print(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
