#!/usr/bin/env python3
"""Requests per second of the example web application's trivial route (`/`), with the
gate's tower layer and without it (`--no-gate`), measured with wrk on loopback in the
same run, alternating, on a current SQLite database.

Usage: benches/webapp_rps.py [--rounds 5] [--seconds 5] [--connections 32]
Needs wrk (apt-get install -y wrk). Builds the release binaries itself.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


def start(project, gated):
    args = [os.path.join(RELEASE, "webapp"), "--project", project, "--token", "bench",
            "--listen", "127.0.0.1:0"] + ([] if gated else ["--no-gate"])
    env = dict(os.environ, UPGRADER_BIN=os.path.join(RELEASE, "upgrader"))
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, text=True)
    address = process.stdout.readline().strip().removeprefix("listening on ")
    return process, address


def rps(address, seconds, connections):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", address + "/"],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "webapp", "-p", "upgrader"],
                   cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as work:
        project = os.path.join(work, "project")
        shutil.copytree(os.path.join(ROOT, "examples", "webapp", "project"), project)
        subprocess.run([os.path.join(RELEASE, "upgrader"), "--project", project, "run"],
                       check=True, stdout=subprocess.DEVNULL)
        results = {True: [], False: []}
        for round_index in range(args.rounds):
            for gated in ([True, False] if round_index % 2 == 0 else [False, True]):
                process, address = start(project, gated)
                try:
                    # The first request opens the gate; wait for it.
                    deadline = time.time() + 30
                    while subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                          address + "/"], capture_output=True,
                                         text=True).stdout != "200":
                        if time.time() > deadline:
                            sys.exit("the application did not answer 200")
                        time.sleep(0.05)
                    results[gated].append(rps(address, args.seconds, args.connections))
                finally:
                    process.terminate()
                    process.wait()
        with_layer = statistics.median(results[True])
        without = statistics.median(results[False])
        print(f"trivial route: {with_layer:.0f} req/s with the gate layer, {without:.0f} req/s "
              f"without; the layer costs {(without - with_layer) / without * 100:.1f}% "
              f"(median of {args.rounds}; rounds with: {results[True]}, without: {results[False]})")


if __name__ == "__main__":
    main()
