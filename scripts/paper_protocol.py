#!/usr/bin/env python3
"""The paper's protocol on MNIST (Gutha et al., WACV 2025, Tables 1 and 4), from two evaluations
of `pipelines/frontier_mnist.mapga`: one on VALIDATION digits, to choose, one on TEST digits,
to report.

    mapga eval pipelines/frontier_mnist.mapga --set split=validation --set n=50 --out results/frontier_validation
    mapga eval pipelines/frontier_mnist.mapga --out results/frontier_mnist
    python3 scripts/paper_protocol.py results/frontier_validation results/frontier_mnist

For each task (noiseless): MAP-GA and its variants at 1,000 ascent steps with the split into
levels x steps per level (`split_of_steps` 1-5) that has the lowest classifier FD on the
validation digits; each baseline at the step count of the paper's ablation set (20, 50, 100,
200, 250, 500, 1000) with the lowest validation FD. The TEST results of exactly those cells
form the table, beside the equal-budget table (every method at about 100 network evaluations:
MAP-GA's budget 50 = 10 levels x 5 ascent steps, 110 forward evaluations with the prior term
and 50 backward passes; the baselines' 100 steps). Nothing is chosen on test
digits. Writes `protocol.md` into the test folder and prints it.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

from plot_frontier import NAMES, TASKS  # the same methods and tasks, in the same order

ABLATION_STEPS = [20, 50, 100, 200, 250, 500, 1000]
SPLITS = {1: "10 x 100", 2: "20 x 50", 3: "50 x 20", 4: "100 x 10", 5: "200 x 5"}
#: The equal-budget row: MAP-GA at 50 ascent steps (10 x 5), the baselines at 100 steps.
EQUAL = {"mapga": 50, "mapga_np": 50, "mapga_d": 50, "mapga_d_np": 50}
EQUAL_BASELINE = 100


def cells(folder: Path) -> dict:
    """(solver, task, sigma_y, budget, split_of_steps) -> {PSNR, FD, accuracy, n}."""
    path = folder / "results.csv"
    if not path.is_file():
        sys.exit(f"{path}: not found (run the evaluation first, see --help)")
    rows = defaultdict(list)
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            key = (r["solver"], r["task"], float(r.get("sigma_y") or 0),
                   int(float(r["budget"])), int(float(r.get("split_of_steps") or 0)))
            rows[key].append(r)
    out = {}
    for key, rs in rows.items():
        psnr = [min(float(r["PSNR"]), 60.0) for r in rs]
        out[key] = {
            "n": len(rs),
            "PSNR": sum(psnr) / len(psnr),
            "FD": float(rs[0]["FD"]),
            "accuracy": sum(float(r["accuracy"]) for r in rs) / len(rs),
        }
    return out


def best(valid: dict, solver: str, task: str) -> tuple | None:
    """The validation-best cell key of a method on a task (lowest FD)."""
    if solver.startswith("mapga"):
        keys = [(solver, task, 0.0, 1000, s) for s in SPLITS]
    else:
        keys = [(solver, task, 0.0, b, 0) for b in ABLATION_STEPS]
    found = [(valid[k]["FD"], k) for k in keys if k in valid and not math.isnan(valid[k]["FD"])]
    return min(found)[1] if found else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("validation", type=Path, help="the evaluation on validation digits")
    ap.add_argument("test", type=Path, help="the evaluation on test digits")
    args = ap.parse_args()
    valid, test = cells(args.validation), cells(args.test)
    lines = ["# The paper's protocol on MNIST", "",
             "Each method at its best budget, chosen per task on validation digits by classifier FD,",
             "scored on test digits (FD / PSNR dB / accuracy %); `-` where a cell has not run.", ""]
    chosen = []
    head = "| method | " + " | ".join(TASKS) + " |"
    rule = "|---|" + "---|" * len(TASKS)
    for title, pick in (("Best budget (chosen on validation digits)", "best"),
                        ("Equal budget (about 100 network evaluations)", "equal")):
        lines += [f"## {title}", "", head, rule]
        for solver, name in NAMES.items():
            row = [name]
            for task in TASKS:
                if pick == "best":
                    key = best(valid, solver, task)
                    if key is not None:
                        what = SPLITS[key[4]] if solver.startswith("mapga") else f"{key[3]} steps"
                        chosen.append(f"{name} on {task}: {what}")
                else:
                    budget = EQUAL.get(solver, EQUAL_BASELINE)
                    key = (solver, task, 0.0, budget, 0)
                cell = test.get(key) if key else None
                row.append("-" if cell is None else
                           f"{cell['FD']:.3g} / {cell['PSNR']:.2f} / {100 * cell['accuracy']:.0f}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## What was tuned (on validation digits only)", ""] + [f"- {c}" for c in chosen] + [""]
    text = "\n".join(lines)
    (args.test / "protocol.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
