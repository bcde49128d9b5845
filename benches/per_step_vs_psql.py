#!/usr/bin/env python3
"""Times `upgrader run --transaction per-step` against one psql session that wraps each
migration in BEGIN/COMMIT (what a migration tool committing per migration must at least
do), on a throwaway PostgreSQL server, in the same run: N small steps (CREATE TABLE +
INSERT each), each side on its own fresh database.

Alternating order each round, and the median of the paired ratios.

Usage: benches/per_step_vs_psql.py [--steps 1000] [--rounds 5]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_psql import Server  # noqa: E402
from cli_vs_sqlite3 import BINARY, ROOT, make_project, step_sql, timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    server = Server()
    try:
        with tempfile.TemporaryDirectory() as directory:
            os.chmod(directory, 0o755)
            make_project(directory, args.steps)
            sql = os.path.join(directory, "per-step.sql")
            with open(sql, "w") as f:
                f.write("".join(f"BEGIN;\n{step_sql(i)}COMMIT;\n" for i in range(args.steps)))
            ours, theirs = [], []
            for round_index in range(args.rounds):
                pair = [
                    lambda: ours.append(timed([BINARY, "--project", directory, "--database",
                                               server.url(server.fresh()), "run",
                                               "--no-backup", "--transaction", "per-step"])),
                    lambda: theirs.append(timed(server.psql_command(server.fresh(),
                                                                    ["-f", sql]))),
                ]
                for run in pair if round_index % 2 == 0 else reversed(pair):
                    run()
            ours_ms, theirs_ms = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
            paired = statistics.median(a / b for a, b in zip(ours, theirs))
            print(f"apply {args.steps} steps on PostgreSQL, a commit per step: upgrader run "
                  f"--transaction per-step {ours_ms:.1f} ms, psql (BEGIN/COMMIT per step) "
                  f"{theirs_ms:.1f} ms, ratio of medians {ours_ms / theirs_ms:.2f}, "
                  f"median of paired ratios {paired:.2f} ({args.rounds} rounds)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
