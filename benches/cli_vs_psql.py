#!/usr/bin/env python3
"""Times the whole upgrader CLI against psql on a throwaway PostgreSQL server, in the same run.

1. `upgrader run --no-backup` applying N small steps (one SQL file each) to a fresh database, versus
   `psql -1 -f` of the same SQL concatenated, on another fresh database; and the peak
   memory (max RSS) of the upgrader process during the run.
2. `upgrader check` and a no-op `upgrader run` against an up-to-date database with N
   applied steps, each versus `psql -c 'select 1'` (alternating, paired ratios).

Usage: benches/cli_vs_psql.py [--steps 1000] [--rounds 15] [--check-rounds 100] [--check-only]
$UPGRADER_BENCH_BINARY times another build instead of a fresh release build.
Starts its own server from the installed binaries (as the postgres user when root) and
removes it afterwards.
"""
import argparse
import glob
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build, make_project, timed  # noqa: E402


def pg_binary(name):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        sys.exit(f"{name} not found: apt-get install -y postgresql")
    return candidates[-1]


def as_server_user(command):
    return ["runuser", "-u", "postgres", "--"] + command if os.geteuid() == 0 else command


class Server:
    def __init__(self):
        # In memory where there is a tmpfs: file creation on this machine's disk varies
        # as much as the fsyncs do (see the options below).
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.base = tempfile.mkdtemp(prefix="upgrader-bench-pg-", dir=shm)
        self.data = os.path.join(self.base, "data")
        os.mkdir(self.data)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:", self.base], check=True)
        subprocess.run(as_server_user([pg_binary("initdb"), "-D", self.data, "-U", "bench",
                                       "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"]),
                       check=True, stdout=subprocess.DEVNULL)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # fsync off: creating 1,000 tables makes each commit flush thousands of files,
        # and this machine's disk varies by +-50% from run to run, which drowns the
        # difference being measured. Without the flush both sides are shorter, so
        # upgrader's own costs weigh more: the comparison is stricter, not looser.
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        subprocess.run(as_server_user([pg_binary("pg_ctl"), "-D", self.data, "-w", "-l",
                                       os.path.join(self.base, "log"), "-o", options, "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.databases = 0

    def fresh(self):
        self.databases += 1
        name = f"b{self.databases}"
        self.psql("postgres", ["-c", f"CREATE DATABASE {name}"])
        return name

    def url(self, name):
        return f"postgres://bench@127.0.0.1:{self.port}/{name}"

    def psql_command(self, name, args):
        return [pg_binary("psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "bench", "-d", name, "-v", "ON_ERROR_STOP=1"] + args

    def psql(self, name, args):
        subprocess.run(self.psql_command(name, args), check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(as_server_user([pg_binary("pg_ctl"), "-D", self.data, "-m", "immediate",
                                       "stop"]), stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def apply_bench(args, server, directory, sql):
    ours, theirs, peaks = [], [], []
    # Alternating which goes first, and comparing each pair: the machine's speed
    # drifts between rounds, and a pair sees the same drift.
    for round_index in range(args.rounds):
        pair = [
            # --no-backup: psql makes no backup either; the pg_dump before a run is timed
            # by benches/backup_postgres.py.
            lambda: ours.append(timed([BINARY, "--project", directory, "--database",
                                       server.url(server.fresh()), "run", "--no-backup"])),
            lambda: theirs.append(timed(server.psql_command(server.fresh(),
                                                            ["-1", "-f", sql]))),
        ]
        for run in pair if round_index % 2 == 0 else reversed(pair):
            run()
    name = server.fresh()
    measured = subprocess.run(
        ["/usr/bin/time", "-f", "%M", BINARY, "--project", directory, "--database",
         server.url(name), "run", "--no-backup"], check=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    peaks.append(int(measured.stderr.strip().splitlines()[-1]))
    ours_ms, theirs_ms = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
    paired = statistics.median(a / b for a, b in zip(ours, theirs))
    print(f"apply {args.steps} steps on PostgreSQL: upgrader run {ours_ms:.1f} ms, "
          f"psql -1 -f {theirs_ms:.1f} ms, ratio of medians {ours_ms / theirs_ms:.2f}, "
          f"median of paired ratios {paired:.2f} ({args.rounds} rounds)")
    print(f"  peak memory of upgrader run: {peaks[0] / 1024:.1f} MiB (max RSS)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--check-rounds", type=int, default=100)
    parser.add_argument("--check-only", action="store_true",
                        help="skip the apply benchmark (the database is upgraded once)")
    args = parser.parse_args()
    build()
    server = Server()
    try:
        with tempfile.TemporaryDirectory() as directory:
            os.chmod(directory, 0o755)
            make_project(directory, args.steps)
            sql = os.path.join(directory, "all.sql")
            # psql -1 wraps the file in its own transaction.
            with open(sql) as f:
                body = f.read().replace("BEGIN;\n", "").replace("COMMIT;\n", "")
            with open(sql, "w") as f:
                f.write(body)
            if not args.check_only:
                apply_bench(args, server, directory, sql)
            name = server.fresh()
            subprocess.run([BINARY, "--project", directory, "--database", server.url(name), "run"],
                           check=True, stdout=subprocess.DEVNULL)
            for command in ("check", "run"):
                ours, selects = [], []
                for _ in range(args.check_rounds):
                    ours.append(timed([BINARY, "--project", directory, "--database",
                                       server.url(name), command]))
                    selects.append(timed(server.psql_command(name, ["-c", "select 1"])))
                ours_ms = statistics.median(ours) * 1000
                select_ms = statistics.median(selects) * 1000
                paired = statistics.median(a / b for a, b in zip(ours, selects))
                print(f"upgrader {command} ({args.steps} applied steps, nothing to do): "
                      f"{ours_ms:.2f} ms; psql -c 'select 1': {select_ms:.2f} ms; "
                      f"median of paired ratios {paired:.2f} ({args.check_rounds} pairs)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
