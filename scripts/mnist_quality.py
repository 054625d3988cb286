#!/usr/bin/env python3
"""Measure the shipped MNIST models on the held-out split and print the README's quality table.

    cargo build --release
    python3 scripts/mnist_quality.py          # 200 digits per task, 1,000 samples, 10 x 5
    python3 scripts/mnist_quality.py --n 100 --tasks box25,deblur --out runs/quality

Runs `mapga run` on each restoration pipeline of `pipelines/` (noiseless, and the inpainting
ones again with sigma_y = 0.05) and on `pipelines/mnist_samples.mapga`, reads each run's
`metrics.json`, and writes `table.md` (Markdown) and `quality.json` under --out. Standard
library only; the numbers come from mapga itself (the pipelines `report` them).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: task name -> (pipeline, is inpainting: also run noisy)
TASKS = {
    "box25": ("mnist_inpaint_box25.mapga", True),
    "box50": ("mnist_inpaint_box50.mapga", True),
    "half": ("mnist_inpaint_half.mapga", True),
    "expand": ("mnist_inpaint_expand.mapga", True),
    "sr2x": ("mnist_inpaint_sr2x.mapga", True),
    "altlines": ("mnist_inpaint_altlines.mapga", True),
    "deblur": ("mnist_deblur.mapga", False),
    "supres4x": ("mnist_supres4x.mapga", False),
}


def run(binary: Path, pipeline: str, out: Path, sets: dict[str, object]) -> tuple[dict, float]:
    """Runs one pipeline (one rayon thread: small networks run best one process per core).

    A run whose folder already holds its metrics for the same settings and binary is not
    repeated, so an interrupted measurement continues where it stopped."""
    stamp = {"pipeline": pipeline, "settings": sets, "binary_mtime": binary.stat().st_mtime}
    done = out / "quality-run.json"
    if done.exists() and (out / "metrics.json").exists():
        previous = json.loads(done.read_text())
        if {k: previous.get(k) for k in stamp} == stamp:
            print(f"# reusing {out}", file=sys.stderr, flush=True)
            return json.loads((out / "metrics.json").read_text()), previous["seconds"]
    cmd = [str(binary), "run", "--quiet", "--out", str(out), str(REPO / "pipelines" / pipeline)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.time()
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    seconds = time.time() - t0
    done.write_text(json.dumps({**stamp, "seconds": seconds}) + "\n")
    return json.loads((out / "metrics.json").read_text()), seconds


def metric(metrics: dict, name: str) -> float:
    """A reported value from metrics.json, whatever its exact layout."""
    value = metrics[name] if name in metrics else metrics.get("reports", {}).get(name)
    if isinstance(value, dict):
        value = value.get("value")
    return float(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="held-out digits per noiseless task")
    p.add_argument("--n-noisy", type=int, default=200, help="held-out digits per noisy task")
    p.add_argument("--steps", type=int, default=10, help="MAP-GA levels")
    p.add_argument("--iters", type=int, default=5, help="ascent steps per level")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                   help="pipelines run at once (each on one thread)")
    p.add_argument("--samples", type=int, default=1000, help="unconditional samples per sampler")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset")
    p.add_argument("--noisy", type=float, default=0.05, help="sigma_y of the noisy runs (0: none)")
    p.add_argument("--skip-samples", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "quality")
    p.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "mapga")
    args = p.parse_args()
    if not args.binary.exists():
        sys.exit(f"error: {args.binary} does not exist; run `cargo build --release` first")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for task in args.tasks.split(","):
        if task not in TASKS:
            sys.exit(f"error: unknown task `{task}` (expected one of {', '.join(TASKS)})")
        pipeline, inpainting = TASKS[task]
        for sigma_y in [0.0] + ([args.noisy] if inpainting and args.noisy > 0 else []):
            name = task if sigma_y == 0 else f"{task}, sigma_y={sigma_y}"
            folder = args.out / (task if sigma_y == 0 else f"{task}_noisy")
            n = args.n if sigma_y == 0 else args.n_noisy
            sets = {"n": n, "sigma_y": sigma_y, "steps": args.steps, "iters": args.iters}
            jobs.append((name, pipeline, folder, sets))
    results: dict[str, dict] = {}
    rows = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        samples = None
        if not args.skip_samples:  # the longest job first
            samples = pool.submit(run, args.binary, "mnist_samples.mapga", args.out / "samples",
                                  {"count": args.samples, "rows": 16})
        done = pool.map(lambda j: run(args.binary, j[1], j[2], j[3]), jobs)
        for (name, _, _, sets), (m, seconds) in zip(jobs, done):
            results[name] = {**m, "seconds": seconds, "settings": sets}
            rows.append(
                f"| {name} | {sets['n']} | {metric(m, 'PSNR'):.2f} | {metric(m, 'SSIM'):.3f} | "
                f"{100 * metric(m, 'accuracy'):.1f}% | {metric(m, 'baseline PSNR'):.2f} | "
                f"{metric(m, 'baseline SSIM'):.3f} | "
                f"{100 * metric(m, 'baseline accuracy'):.1f}% | {seconds:.0f} s |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
        sample_metrics = samples.result() if samples is not None else None
    table = [
        f"MAP-GA (noisy inpainting: MAP-GA-PGDM) with {args.steps} levels x {args.iters} ascent "
        "steps, on the first n held-out digits, against each pipeline's trivial baseline:",
        "",
        "| task | n | PSNR | SSIM | accuracy | baseline PSNR | baseline SSIM | baseline accuracy "
        "| time (whole batch) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if sample_metrics is not None:
        m, seconds = sample_metrics
        table += [
            "",
            f"Unconditional samples ({args.samples} per sampler, {seconds:.0f} s for all three), "
            "scored by the classifier against the 1,000 held-out digits:",
            "",
            "| sampler | confident (p > 0.9) | Fréchet distance (classifier features) |",
            "|---|---|---|",
        ]
        for sampler in ["EDM Heun-18", "CM 1-step", "CM 2-step"]:
            table.append(f"| {sampler} | {100 * metric(m, sampler + ' confident'):.1f}% | "
                         f"{metric(m, sampler + ' FD'):.2f} |")
        table.append(f"| held-out digits themselves | {100 * metric(m, 'reference confident'):.1f}% "
                     f"| 0 |")
    (args.out / "table.md").write_text("\n".join(table) + "\n")
    (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
