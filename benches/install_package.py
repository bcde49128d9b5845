#!/usr/bin/env python3
"""Times `upgrader updates install` against `zip -qr -1 backup.zip app && unzip -qo pkg.zip -d app`.

An application of --files files (about --app-megabytes MB in all: sizes spread between
a fifth and 1.8 times the mean, random-ish content: random bytes written as hex, so it
deflates to about half) and a package of the same number of files (about
--package-megabytes MB) replacing every one of them, plus `files/VERSION`, deflated at
zlib's default level. The baseline unzips a zip holding exactly the same entries
(without the `files/` prefix, deflated at the same level) after zipping the application.

Each round, in an order that alternates, on fresh copies (made and synced untimed):

- `upgrader updates install` in a copy of the application with the package in
  `updates/Updates_Pending/` (its whole-project backup zip included; checked after: the
  new VERSION, the package moved to `Updates_Installed/`, one `app-…zip` backup, a
  replaced file's new content);
- `sh -c 'zip -qr -1 backup.zip app && unzip -qo pkg.zip -d app'` in a copy of the
  application (checked after: the same replaced file).

Everything is synced to disk before each timed command, so one command's write-back
does not land in the next one's time (neither command syncs: upgrader's journal syncs
its few small records only). Reported: medians of wall and CPU time (user + system, of
the process and the children it waited for), the ratio of the medians and the median
of the paired ratios (target <= 1.3), and the peak RSS of the upgrader process
(/usr/bin/time's %M; target < 64 MiB), with zip's and unzip's for reference.

Usage: benches/install_package.py [--files 10000] [--app-megabytes 100]
                                  [--package-megabytes 200] [--rounds 5] [--dir DIR]
Needs a release build (it runs `cargo build --release` itself, unless
$UPGRADER_BENCH_BINARY names the binary to time), zip and unzip on PATH and GNU time
(`apt-get install -y zip unzip time`).
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_vs_sqlite3 import BINARY, build  # noqa: E402

MANIFEST = """<upgrade project="bench" initial-version="1.0.0">
  <install><sql>CREATE TABLE marks (step INTEGER PRIMARY KEY);</sql></install>
  <step name="s1" from="1.0.0" to="1.1.0"><sql>INSERT INTO marks (step) VALUES (1);</sql></step>
</upgrade>
"""


def paths(count):
    """Relative paths: 100 files a folder, two levels deep."""
    return [f"src/m{i // 1000:02d}/d{(i // 100) % 10}/f{i:05d}.txt" for i in range(count)]


def content(rng, mean):
    """Random-ish bytes of a size around `mean`: hex of random bytes (deflates to ~55%)."""
    size = rng.randint(mean // 5, mean * 9 // 5)
    return os.urandom((size + 1) // 2).hex().encode()[:size]


def make_app(directory, files, megabytes, rng):
    started = time.perf_counter()
    os.makedirs(directory)
    total = 0
    mean = megabytes * 1_000_000 // files
    for relative in paths(files):
        path = os.path.join(directory, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = content(rng, mean)
        total += len(data)
        with open(path, "wb") as f:
            f.write(data)
    with open(os.path.join(directory, "VERSION"), "w") as f:
        f.write("1.0.0\n")
    with open(os.path.join(directory, "upgrade.xml"), "w") as f:
        f.write(MANIFEST)
    print(f"application: {files} files, {total / 1e6:.0f} MB, made in "
          f"{time.perf_counter() - started:.1f} s")


def make_packages(package, baseline, files, megabytes, rng):
    """The upgrader package and the baseline's zip: the same entries and compression."""
    started = time.perf_counter()
    mean = megabytes * 1_000_000 // files
    total = 0
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as ours, \
            zipfile.ZipFile(baseline, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as theirs:
        ours.writestr("update.xml", '<update project="bench" version="1.1.0" requires="1.0.0">'
                      "<notes>The benchmark's package</notes></update>\n")
        for relative in paths(files) + ["VERSION"]:
            data = b"1.1.0\n" if relative == "VERSION" else content(rng, mean)
            total += len(data)
            ours.writestr("files/" + relative, data)
            theirs.writestr(relative, data)
    print(f"package: {files + 1} files, {total / 1e6:.0f} MB, "
          f"{os.path.getsize(package) / 1e6:.0f} MB zipped, made in "
          f"{time.perf_counter() - started:.1f} s")
    probe = paths(files)[files // 2]
    with zipfile.ZipFile(baseline) as z:
        return probe, z.read(probe)


def measured(command, cwd=None):
    """(wall seconds, CPU seconds, peak RSS in KiB) of `command`.

    The peak RSS comes from /usr/bin/time, not from this process's wait4: Python starts
    children with vfork, and Linux carries the parent's memory high-water mark across
    the exec into the child's ru_maxrss, so wait4 would report at least this script's
    own size. /usr/bin/time's is about 2 MiB."""
    os.sync()
    with tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *command],
                                   cwd=cwd, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            sys.exit(f"{command} exited with {process.returncode}")
        peak = int(rss.read().split()[-1])
    return wall, usage.ru_utime + usage.ru_stime, peak


def fresh_copy(template, target):
    subprocess.run(["cp", "-a", template, target], check=True)


def upgrader_round(template, package, work, database, probe, expected):
    app = os.path.join(work, "app")
    fresh_copy(template, app)
    pending = os.path.join(app, "updates", "Updates_Pending")
    os.makedirs(pending)
    shutil.copy(package, os.path.join(pending, "bench-1.1.0.zip"))
    result = measured([BINARY, "--project", app, "--database", f"sqlite://{database}",
                       "updates", "install"])
    with open(os.path.join(app, "VERSION")) as f:
        assert f.read().strip() == "1.1.0"
    assert os.listdir(pending) == []
    installed = os.listdir(os.path.join(app, "updates", "Updates_Installed"))
    assert len(installed) == 1 and installed[0].startswith("bench-1.1.0-"), installed
    backups = os.listdir(os.path.join(app, "updates", "Updates_Backups"))
    assert len(backups) == 1 and backups[0].startswith("app-bench-1.0.0-"), backups
    with open(os.path.join(app, probe), "rb") as f:
        assert f.read() == expected
    shutil.rmtree(app)
    return result


def baseline_round(template, baseline, work, probe, expected):
    app = os.path.join(work, "app")
    fresh_copy(template, app)
    shutil.copy(baseline, os.path.join(work, "pkg.zip"))
    result = measured(["sh", "-c", "zip -qr -1 backup.zip app && unzip -qo pkg.zip -d app"],
                      cwd=work)
    with open(os.path.join(app, probe), "rb") as f:
        assert f.read() == expected
    shutil.rmtree(app)
    os.remove(os.path.join(work, "backup.zip"))
    os.remove(os.path.join(work, "pkg.zip"))
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--app-megabytes", type=int, default=100)
    parser.add_argument("--package-megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where everything goes (default: the temp dir)")
    args = parser.parse_args()
    missing = [tool for tool in ("zip", "unzip", "/usr/bin/time") if not shutil.which(tool)]
    if missing:
        sys.exit(f"{', '.join(missing)} not installed: apt-get install -y zip unzip time")
    build()
    rng = random.Random(12)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        template = os.path.join(directory, "template")
        make_app(template, args.files, args.app_megabytes, rng)
        package = os.path.join(directory, "bench-1.1.0.zip")
        baseline = os.path.join(directory, "baseline.zip")
        probe, expected = make_packages(package, baseline, args.files,
                                        args.package_megabytes, rng)
        # The database at 1.0.0, outside the application (so neither side copies it).
        database = os.path.join(directory, "bench.db")
        subprocess.run([BINARY, "--project", template, "--database", f"sqlite://{database}",
                        "--no-backup", "run"], check=True, stdout=subprocess.DEVNULL)
        work = os.path.join(directory, "work")
        os.makedirs(work)
        load = os.getloadavg()[0]
        ours, theirs = [], []
        jobs = [
            lambda: ours.append(upgrader_round(template, package, work, database, probe,
                                               expected)),
            lambda: theirs.append(baseline_round(template, baseline, work, probe, expected)),
        ]
        for round_index in range(args.rounds):
            for index in range(2):
                jobs[(round_index + index) % 2]()
        print(f"{args.rounds} rounds; load average {load:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after")
    for index, what in ((0, "wall"), (1, "CPU")):
        mine = [o[index] for o in ours]
        base = [t[index] for t in theirs]
        ratio = statistics.median(mine) / statistics.median(base)
        paired = statistics.median(m / b for m, b in zip(mine, base))
        print(f"{what}: upgrader updates install {statistics.median(mine) * 1000:.0f} ms "
              f"(rounds: {', '.join(f'{m * 1000:.0f}' for m in mine)}); zip + unzip "
              f"{statistics.median(base) * 1000:.0f} ms "
              f"(rounds: {', '.join(f'{b * 1000:.0f}' for b in base)})")
        print(f"  ratio {ratio:.2f} (medians), median of paired ratios {paired:.2f}, "
              f"target <= 1.30: {'met' if max(ratio, paired) <= 1.3 else 'MISSED'}")
    peak = max(o[2] for o in ours) / 1024
    print(f"peak RSS: upgrader {peak:.1f} MiB (largest of {args.rounds} rounds), target < 64 MiB: "
          f"{'met' if peak < 64 else 'MISSED'}; zip/unzip {max(t[2] for t in theirs) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
