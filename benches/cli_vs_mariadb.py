#!/usr/bin/env python3
"""Times `upgrader run` against the `mariadb` client on a throwaway MariaDB server, in the
same run: N steps that each run alone (`transaction="none"`), as a real MySQL migration
history needs (each step: CREATE TABLE + INSERT; every tenth also ALTER TABLE + CREATE
INDEX), versus `mariadb < all.sql` of the same statements on another fresh database.

Alternating order each round, and the median of the paired ratios: the machine's speed
drifts between rounds, and a pair sees the same drift.

Usage: benches/cli_vs_mariadb.py [--steps 1000] [--rounds 5]
Starts its own server (mariadb-install-db + mariadbd, data in /dev/shm) from the
installed binaries and removes it afterwards.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, ROOT, timed  # noqa: E402


def step_sql(index):
    sql = (
        f"CREATE TABLE t{index} (id INT PRIMARY KEY, v VARCHAR(100) NOT NULL) ENGINE=InnoDB;\n"
        f"INSERT INTO t{index} (id, v) VALUES (1, 'step {index}; value');\n"
    )
    if index % 10 == 9:
        sql += (
            f"ALTER TABLE t{index} ADD COLUMN w INT NULL;\n"
            f"CREATE INDEX t{index}_v ON t{index} (v);\n"
        )
    return sql


def make_project(directory, steps):
    os.makedirs(os.path.join(directory, "scripts"))
    lines = ['<upgrade project="bench" initial-version="1.0.0">']
    for index in range(steps):
        name = f"scripts/step{index}.sql"
        with open(os.path.join(directory, name), "w") as f:
            f.write(step_sql(index))
        lines.append(
            f'  <step name="s{index}" from="1.{index}.0" to="1.{index + 1}.0" '
            f'transaction="none"><sql file="{name}"/></step>'
        )
    lines.append("</upgrade>")
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(directory, "VERSION"), "w") as f:
        f.write(f"1.{steps}.0\n")
    with open(os.path.join(directory, "all.sql"), "w") as f:
        f.write("".join(step_sql(i) for i in range(steps)))


def binary(name, *alternatives):
    for candidate in (name,) + alternatives:
        found = shutil.which(candidate) or (
            f"/usr/sbin/{candidate}" if os.path.exists(f"/usr/sbin/{candidate}") else None)
        if found:
            return found
    sys.exit(f"{name} not found: apt-get install -y mariadb-server")


class Server:
    def __init__(self):
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.base = tempfile.mkdtemp(prefix="upgrader-bench-mariadb-", dir=shm)
        data = os.path.join(self.base, "data")
        user = ["--user=mysql"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "mysql:", self.base], check=True)
        subprocess.run([binary("mariadb-install-db", "mysql_install_db"), "--no-defaults",
                        f"--datadir={data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", "--skip-name-resolve"] + user,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.socket = os.path.join(self.base, "mariadb.sock")
        # The same settings as the test server: the disk's fsync time drowns what is
        # measured, and both sides run on the same server.
        self.process = subprocess.Popen(
            [binary("mariadbd", "mysqld"), "--no-defaults", f"--datadir={data}",
             f"--port={self.port}", f"--socket={self.socket}",
             f"--pid-file={os.path.join(self.base, 'mariadb.pid')}",
             f"--log-error={os.path.join(self.base, 'server.log')}",
             "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin",
             "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
             "--innodb-buffer-pool-size=128M"] + user,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            if subprocess.run(self.client("mysql", ["-e", "select 1"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        else:
            sys.exit("mariadbd did not start")
        self.databases = 0

    def client(self, database, args=()):
        return [binary("mariadb", "mysql"), "--no-defaults", "-uroot", "-h127.0.0.1",
                f"-P{self.port}", database] + list(args)

    def fresh(self):
        self.databases += 1
        name = f"b{self.databases}"
        subprocess.run(self.client("mysql", ["-e", f"CREATE DATABASE {name}"]), check=True)
        return name

    def url(self, name):
        return f"mysql://root@127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)


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
            sql = os.path.join(directory, "all.sql")
            ours, theirs = [], []
            for round_index in range(args.rounds):
                def run_ours():
                    # --no-backup: the client makes no backup either (mariadb-dump is
                    # timed on its own by the backup benches).
                    ours.append(timed([BINARY, "--project", directory, "--database",
                                       server.url(server.fresh()), "run", "--no-backup"]))

                def run_theirs():
                    with open(sql) as script:
                        theirs.append(timed(server.client(server.fresh()), stdin=script))
                pair = [run_ours, run_theirs]
                for run in pair if round_index % 2 == 0 else reversed(pair):
                    run()
            ours_ms, theirs_ms = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
            paired = statistics.median(a / b for a, b in zip(ours, theirs))
            print(f"apply {args.steps} transaction=\"none\" steps on MariaDB: upgrader run "
                  f"{ours_ms:.1f} ms, mariadb < all.sql {theirs_ms:.1f} ms, ratio of medians "
                  f"{ours_ms / theirs_ms:.2f}, median of paired ratios {paired:.2f} "
                  f"({args.rounds} rounds)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
