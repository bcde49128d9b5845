#!/usr/bin/env python3
"""What recording table schemas adds to `upgrader run`: a baseline build (one without
schema records, e.g. the commit before them) against this one, alternating, paired
ratios, on fresh databases, `--no-backup`:

1. cli_vs_sqlite3's project of N steps, each creating a table (every run records N new
   tables), on SQLite and PostgreSQL;
2. N data-only steps on one table (nothing to record but the first contact's);
3. PostgreSQL: a schema of 1,000 tables (verify_vs_dump's), then ten steps of which one
   alters a table (what a deploy usually looks like).

Usage: UPGRADER_BASELINE_BINARY=/path/to/old/upgrader benches/schema_records_cost.py
       [--steps 1000] [--rounds 15]
$UPGRADER_BENCH_BINARY times another build instead of a fresh release build.
"""
import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build, make_project, timed  # noqa: E402
import cli_vs_psql  # noqa: E402
import verify_vs_dump  # noqa: E402


def paired(label, rounds, baseline, ours):
    """`baseline` and `ours` time one run each; which goes first alternates."""
    a, b = [], []
    for index in range(rounds):
        pair = [(baseline, a), (ours, b)]
        for run, out in pair if index % 2 == 0 else reversed(pair):
            out.append(run())
    print(f"{label}: baseline {statistics.median(a) * 1000:.1f} ms, with schema records "
          f"{statistics.median(b) * 1000:.1f} ms, median of paired ratios "
          f"{statistics.median(y / x for x, y in zip(a, b)):.3f} ({rounds} rounds)")


def data_project(directory, steps):
    os.makedirs(os.path.join(directory, "scripts"))
    lines = ['<upgrade project="bench" initial-version="1.0.0">']
    for index in range(steps):
        name = f"scripts/s{index}.sql"
        with open(os.path.join(directory, name), "w") as f:
            f.write(f"INSERT INTO log (id, v) VALUES ({index}, 'step {index}');\n")
        lines.append(f'  <step name="s{index}" from="1.{index}.0" to="1.{index + 1}.0">'
                     f'<sql file="{name}"/></step>')
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
    baseline = os.environ.get("UPGRADER_BASELINE_BINARY")
    if not baseline:
        sys.exit("set UPGRADER_BASELINE_BINARY to a build without schema records")
    build()
    server = cli_vs_psql.Server()
    try:
        with tempfile.TemporaryDirectory() as ddl, tempfile.TemporaryDirectory() as data:
            for directory in (ddl, data):
                os.chmod(directory, 0o755)
            make_project(ddl, args.steps)
            data_project(data, args.steps)

            def sqlite_run(binary, directory, seed):
                def run():
                    db = os.path.join(directory, "bench.db")
                    for suffix in ("", "-wal", "-shm", "-journal"):
                        if os.path.exists(db + suffix):
                            os.remove(db + suffix)
                    if seed:
                        connection = sqlite3.connect(db)
                        connection.execute(seed)
                        connection.commit()
                        connection.close()
                    return timed([binary, "--project", directory, "--database",
                                  f"sqlite://{db}", "--no-backup", "run"])
                return run

            def pg_run(binary, directory, seed):
                def run():
                    name = server.fresh()
                    if seed:
                        server.psql(name, ["-c", seed])
                    return timed([binary, "--project", directory, "--database",
                                  server.url(name), "--no-backup", "run"])
                return run

            seed = "CREATE TABLE log (id INTEGER PRIMARY KEY, v TEXT)"
            for label, runner in (("SQLite", sqlite_run), ("PostgreSQL", pg_run)):
                paired(f"{label}, {args.steps} steps each creating a table", args.rounds,
                       runner(baseline, ddl, None), runner(BINARY, ddl, None))
                paired(f"{label}, {args.steps} data-only steps", args.rounds,
                       runner(baseline, data, seed), runner(BINARY, data, seed))

        with tempfile.TemporaryDirectory() as deploy:
            os.chmod(deploy, 0o755)
            verify_vs_dump.make_project(deploy, 1000, "postgres")
            installed = open(os.path.join(deploy, "upgrade.xml")).read()
            steps = "".join(f'<step name="s{i}" from="1.0.{i}" to="1.0.{i + 1}"><sql>'
                            f'UPDATE t{i} SET note = note</sql></step>\n' for i in range(9))
            steps += ('<step name="s9" from="1.0.9" to="1.1.0"><sql>'
                      'ALTER TABLE t9 ADD COLUMN extra INTEGER</sql></step>\n')

            def deploy_run(binary):
                def run():
                    url = server.url(server.fresh())
                    with open(os.path.join(deploy, "upgrade.xml"), "w") as f:
                        f.write(installed)
                    with open(os.path.join(deploy, "VERSION"), "w") as f:
                        f.write("1.0.0\n")
                    subprocess.run([binary, "--project", deploy, "--database", url,
                                    "--no-backup", "run"], check=True, stdout=subprocess.DEVNULL)
                    with open(os.path.join(deploy, "upgrade.xml"), "w") as f:
                        f.write(installed.replace("</upgrade>", steps + "</upgrade>"))
                    with open(os.path.join(deploy, "VERSION"), "w") as f:
                        f.write("1.1.0\n")
                    return timed([binary, "--project", deploy, "--database", url,
                                  "--no-backup", "run"])
                return run

            paired("PostgreSQL, 1,000 tables, 10 steps of which one ALTER", args.rounds,
                   deploy_run(baseline), deploy_run(BINARY))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
