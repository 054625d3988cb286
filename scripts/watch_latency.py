#!/usr/bin/env python3
"""Measures the authoring loop of `mapga watch` (README, "The authoring loop").

1. Save -> diagnostics: for every shipped pipeline, the time from a save (a changed comment,
   written the way an editor does) to the watcher's `[watch] check ...` line, median of
   --saves saves. `--check-only` keeps runs out of the way, so this is the check alone, as a
   user sees it on the screen; `--with-runs` measures it while each save also cancels and
   restarts the pipeline's run (on one thread).
2. Param change -> new output: `pipelines/mnist_inpaint_box25.mapga` with a small `n` under
   `mapga watch`; the time from a save that changes `param iters` to the `[watch] run N ok`
   line (all outputs rewritten), with the cache counts it printed, against a new `mapga run`
   process on the same edited file (check, model loading, data, measurement and solver), run
   just before each save; and a save that changes only a report label (all from the cache).

Works on a copy of pipelines/ in a temporary folder (models/ and data/ linked beside it), so
the shipped files are never written.

    cargo build --release
    python3 scripts/watch_latency.py [--binary target/release/mapga] [--saves 7] [--n 10]
"""

import argparse
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Watch:
    """A `mapga watch` child and a queue of its stdout lines with their arrival times."""

    def __init__(self, binary, args, cwd):
        self.proc = subprocess.Popen(
            [binary, "watch", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put((time.perf_counter(), line.rstrip("\n")))

    def wait(self, prefix, timeout=600):
        """The (time, line) of the next line starting with `[watch] prefix`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no `[watch] {prefix}` line")
            t, line = self.lines.get(timeout=left)
            if line.startswith("[watch] " + prefix):
                return t, line

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def save(path, text):
    """Writes `text` to `path` like VS Code does: a temporary file renamed over it."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def workspace():
    """A temporary folder with a copy of pipelines/ and links to models/ and data/."""
    tmp = tempfile.mkdtemp(prefix="mapga-watch-bench-")
    shutil.copytree(os.path.join(ROOT, "pipelines"), os.path.join(tmp, "pipelines"))
    for d in ("models", "data"):
        os.symlink(os.path.join(ROOT, d), os.path.join(tmp, d))
    return tmp


def check_latency(binary, tmp, saves, with_runs):
    mode = ["--threads", "1", "-q"] if with_runs else ["--check-only"]
    print(f"save -> diagnostics (`mapga watch {' '.join(mode)}`), milliseconds")
    print(f"{'pipeline':<36} {'median':>7} {'min':>7} {'max':>7}")
    medians = []
    for name in sorted(os.listdir(os.path.join(tmp, "pipelines"))):
        if not name.endswith(".mapga"):
            continue
        path = os.path.join(tmp, "pipelines", name)
        with open(path) as f:
            text = f.read()
        out = os.path.join(tmp, "out", name)
        w = Watch(binary, [os.path.join("pipelines", name), "--out", out, *mode], tmp)
        try:
            w.wait("check")
            times = []
            for i in range(saves):
                time.sleep(0.2)  # let the previous save settle, as between two real saves
                t0 = time.perf_counter()
                save(path, text + f"\n// save {i}\n")
                t1, _ = w.wait("check")
                times.append((t1 - t0) * 1e3)
        finally:
            w.stop()
            save(path, text)
        med = statistics.median(times)
        medians.append(med)
        print(f"{name:<36} {med:7.1f} {min(times):7.1f} {max(times):7.1f}")
    print(f"worst median: {max(medians):.1f} ms")


def param_change(binary, tmp, n, saves):
    name = "mnist_inpaint_box25.mapga"
    path = os.path.join(tmp, "pipelines", name)
    with open(path) as f:
        text = f.read()
    sets = ["--set", f"n={n}"]
    rel = os.path.join("pipelines", name)
    print(f"\nparam change -> new outputs ({name}, n={n})")
    w = Watch(binary, [rel, "--out", os.path.join(tmp, "out"), *sets], tmp)
    try:
        _, first = w.wait("run 1 ok")
        print(f"watch, first run (cold, iters = 5): {first}")
        # Each save changes `param iters` (the file says 5) to 4 or 6, so the solver does
        # different work each time. Just before it, a new `mapga run` process runs the same
        # edited file (check, model loading, data, measurement, solver) while the watcher idles.
        times = {4: ([], []), 6: ([], [])}
        for i in range(saves):
            v = 4 if i % 2 == 0 else 6
            edited = re.sub(r"param iters = \d+", f"param iters = {v}", text)
            with open(os.path.join(tmp, "pipelines", "cold.mapga"), "w") as f:
                f.write(edited)
            t0 = time.perf_counter()
            subprocess.run(
                [binary, "run", os.path.join("pipelines", "cold.mapga"), "--out", os.path.join(tmp, "out-run"), "-q", *sets],
                cwd=tmp,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            cold = time.perf_counter() - t0
            time.sleep(0.2)
            t0 = time.perf_counter()
            save(path, edited)
            t1, line = w.wait(f"run {i + 2} ok")
            _, recomputed = w.wait("recomputed:")
            times[v][0].append(t1 - t0)
            times[v][1].append(cold)
            print(f"  save {i + 1} (iters = {v}): {t1 - t0:.2f} s (new process: {cold:.2f} s)  {line}")
            print(f"      {recomputed}")
        for v, (warm, cold) in times.items():
            if warm:
                print(
                    f"iters = {v}: save -> outputs {statistics.median(warm):.2f} s, a new"
                    f" `mapga run` process {statistics.median(cold):.2f} s (medians of {len(warm)})"
                )
        # A save that changes no computation (a report label): everything from the cache.
        time.sleep(0.2)
        t0 = time.perf_counter()
        save(path, edited.replace('as "PSNR"', 'as "PSNR (dB)"'))
        t1, line = w.wait(f"run {saves + 2} ok")
        print(f"a save that changes only a report label: {t1 - t0:.2f} s  {line}")
    finally:
        w.stop()
        save(path, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "mapga"))
    ap.add_argument("--saves", type=int, default=7)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--skip-param", action="store_true")
    ap.add_argument(
        "--with-runs",
        action="store_true",
        help="save -> diagnostics while the pipeline runs (on 1 thread) instead of --check-only",
    )
    args = ap.parse_args()
    tmp = workspace()
    try:
        if not args.skip_check:
            check_latency(args.binary, tmp, args.saves, args.with_runs)
        if not args.skip_param:
            param_change(args.binary, tmp, args.n, args.saves)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
