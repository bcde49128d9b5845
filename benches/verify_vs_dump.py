#!/usr/bin/env python3
"""Times `upgrader verify` of a schema of N tables against the database's own schema dump,
in the same run, on throwaway servers: PostgreSQL against `pg_dump --schema-only`, MariaDB
against `mariadb-dump --no-data`. Target: verify <= 0.5 x the dump.

The project installs N tables (columns with types, NOT NULL and defaults; a primary key; a
unique and a check constraint; an index, partial on PostgreSQL; a foreign key to the
table before; a trigger on every tenth), which records their schemas; `verify` must then
find nothing (no false positive on N tables), and is timed alternately with the dump
(which goes first alternates; the median of the paired ratios is the figure).

Usage: benches/verify_vs_dump.py [--tables 1000] [--rounds 11] [--only postgres|mariadb]
$UPGRADER_BENCH_BINARY times another build instead of a fresh release build.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build, timed  # noqa: E402
import cli_vs_psql  # noqa: E402
import cli_vs_mariadb  # noqa: E402


def table_sql(index, dialect):
    references = (f", parent INTEGER REFERENCES t{index - 1} (id) ON DELETE CASCADE"
                  if index > 0 else "")
    if dialect == "mariadb" and index > 0:
        references = (f", parent INTEGER, FOREIGN KEY (parent) REFERENCES t{index - 1} (id) "
                      "ON DELETE CASCADE")
    sql = (f"CREATE TABLE t{index} (id INTEGER PRIMARY KEY, code VARCHAR(40) NOT NULL UNIQUE, "
           f"amount NUMERIC(10,2) DEFAULT 0 CHECK (amount >= 0), note TEXT, "
           f"created VARCHAR(30) NOT NULL DEFAULT 'now'{references});\n")
    where = " WHERE note IS NOT NULL" if dialect == "postgres" else ""
    sql += f"CREATE INDEX t{index}_amount ON t{index} (amount DESC, code){where};\n"
    if index % 10 == 0:
        if dialect == "postgres":
            if index == 0:
                sql += ("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN NEW.note := coalesce(NEW.note, ''); RETURN NEW; END $$;\n")
            sql += (f"CREATE TRIGGER t{index}_touch BEFORE INSERT ON t{index} "
                    "FOR EACH ROW EXECUTE FUNCTION touch();\n")
        else:
            sql += (f"CREATE TRIGGER t{index}_touch BEFORE INSERT ON t{index} "
                    "FOR EACH ROW SET NEW.note = coalesce(NEW.note, '');\n")
    return sql


def make_project(directory, tables, dialect):
    os.makedirs(os.path.join(directory, "scripts"))
    with open(os.path.join(directory, "scripts", "install.sql"), "w") as f:
        f.write("".join(table_sql(i, dialect) for i in range(tables)))
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write('<upgrade project="bench" initial-version="1.0.0">\n'
                '  <install><sql file="scripts/install.sql"/></install>\n</upgrade>\n')
    with open(os.path.join(directory, "VERSION"), "w") as f:
        f.write("1.0.0\n")


def compare(label, verify, dump, rounds):
    ours, theirs = [], []
    for round_index in range(rounds):
        pair = [lambda: ours.append(timed(verify)), lambda: theirs.append(timed(dump))]
        for run in pair if round_index % 2 == 0 else reversed(pair):
            run()
    ours_ms, theirs_ms = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
    paired = statistics.median(a / b for a, b in zip(ours, theirs))
    print(f"{label}: upgrader verify {ours_ms:.1f} ms, dump {theirs_ms:.1f} ms, "
          f"ratio of medians {ours_ms / theirs_ms:.2f}, median of paired ratios {paired:.2f} "
          f"({rounds} rounds)")


def check_clean(directory, url, tables):
    done = subprocess.run([BINARY, "--project", directory, "--database", url, "--json", "verify"],
                          stdout=subprocess.PIPE, text=True)
    report = json.loads(done.stdout)
    unchanged = sum(1 for t in report["tables"] if t["state"] == "unchanged")
    if done.returncode != 0 or unchanged != tables:
        sys.exit(f"verify found drift on a fresh install (exit {done.returncode}, "
                 f"{unchanged} of {tables} unchanged)")


def bench_postgres(args):
    server = cli_vs_psql.Server()
    try:
        with tempfile.TemporaryDirectory() as directory:
            os.chmod(directory, 0o755)
            make_project(directory, args.tables, "postgres")
            name = server.fresh()
            url = server.url(name)
            subprocess.run([BINARY, "--project", directory, "--database", url, "--no-backup",
                            "run"], check=True, stdout=subprocess.DEVNULL)
            check_clean(directory, url, args.tables)
            dump = [cli_vs_psql.pg_binary("pg_dump"), "--schema-only", "-h", "127.0.0.1", "-p",
                    str(server.port), "-U", "bench", "-f", "/dev/null", name]
            compare(f"PostgreSQL, {args.tables} tables (pg_dump --schema-only)",
                    [BINARY, "--project", directory, "--database", url, "verify"], dump,
                    args.rounds)
    finally:
        server.stop()


def bench_mariadb(args):
    server = cli_vs_mariadb.Server()
    try:
        with tempfile.TemporaryDirectory() as directory:
            os.chmod(directory, 0o755)
            make_project(directory, args.tables, "mariadb")
            name = server.fresh()
            url = server.url(name)
            subprocess.run([BINARY, "--project", directory, "--database", url, "--no-backup",
                            "run"], check=True, stdout=subprocess.DEVNULL)
            check_clean(directory, url, args.tables)
            dump = [cli_vs_mariadb.binary("mariadb-dump", "mysqldump"), "--no-defaults", "-uroot",
                    "-h127.0.0.1", f"-P{server.port}", "--no-data", "--result-file=/dev/null",
                    name]
            compare(f"MariaDB, {args.tables} tables (mariadb-dump --no-data)",
                    [BINARY, "--project", directory, "--database", url, "verify"], dump,
                    args.rounds)
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--only", choices=["postgres", "mariadb"])
    args = parser.parse_args()
    build()
    if args.only in (None, "postgres"):
        bench_postgres(args)
    if args.only in (None, "mariadb"):
        bench_mariadb(args)


if __name__ == "__main__":
    main()
