#!/usr/bin/env python3
"""The quality/compute frontier of an evaluation of `pipelines/frontier_mnist.mapga`.

    python3 scripts/plot_frontier.py results/frontier_mnist

reads `results.csv` of the evaluation folder and writes into it:

- `frontier_FD_sigma<s>.png`, `frontier_PSNR_sigma<s>.png`: quality against cost, one panel per
  task, one line per solver, log cost axis; one pair of figures per noise level.
- `frontier_seconds_sigma<s>.png`: FD against seconds per digit.
- `pareto.md`: the Pareto-best method per budget and task (lowest FD, or highest PSNR, among
  the cells that cost at most the budget), by network cost and by seconds.

Cost rule: a digit's cost is its forward network evaluations plus TWO per backward pass
(`evaluations per item + 2 x backward passes per item`): a vector-Jacobian product through a
network costs about two forward passes, so MAP-GA's ascent step (a forward and a backward pass
of the consistency model) costs 3, and a DPS or Pi-GDM step 3, where a DDRM step costs 1.
Seconds per digit are measured, on the machine that ran the cell.

Needs matplotlib; when it is missing the script installs it into `scripts/.venv-plot` and
reruns itself there (`--no-install` to refuse).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "scripts" / ".venv-plot"

# Draw order and names of the methods.
NAMES = {
    "mapga": "MAP-GA",
    "mapga_np": "MAP-GA(NP)",
    "mapga_d": "MAP-GA(D)",
    "mapga_d_np": "MAP-GA(D,NP)",
    "pigdm": "Pi-GDM",
    "ddrm": "DDRM",
    "dps": "DPS",
    "diffpir": "DiffPIR",
    "reddiff": "RED-diff",
    "ct_zsie": "CT-ZSIE",
}
TASKS = ["box50", "half", "expand", "box25", "sr2x", "altlines", "deblur", "supres4x"]
BUDGETS = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
SECONDS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
PSNR_CAP = 60.0


def in_venv() -> bool:
    """True when this interpreter runs inside VENV."""
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_matplotlib(no_install: bool) -> None:
    """Imports matplotlib, or installs it into scripts/.venv-plot and reruns there."""
    try:
        import matplotlib  # noqa: F401

        return
    except ImportError:
        pass
    venv_python = VENV / "bin" / "python"
    # Inside the venv already (sys.prefix is the venv's folder). Not `sys.executable`: the
    # venv's python is a symlink to the system one, so resolving it compares equal from outside
    # too, which made every run after the first refuse to use the venv it had made.
    if no_install or in_venv():
        sys.exit("matplotlib is missing: `python3 -m pip install matplotlib`, or run without --no-install")
    if not venv_python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(venv_python), "-m", "pip", "install", "-q", "matplotlib"], check=True)
    os.execv(str(venv_python), [str(venv_python), *sys.argv])


def read_cells(path: Path) -> dict:
    """Per (solver, task, sigma_y, budget): mean PSNR, FD, accuracy, cost and seconds."""
    rows = defaultdict(list)
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if int(float(r.get("split_of_steps") or 0)) != 0:
                continue  # the paper's protocol cells: `paper_protocol.py` reads them
            key = (r["solver"], r["task"], float(r.get("sigma_y", 0) or 0), int(float(r["budget"])))
            rows[key].append(r)
    cells = {}
    for key, rs in rows.items():
        psnr = [min(float(r["PSNR"]), PSNR_CAP) for r in rs if r.get("PSNR")]
        first = rs[0]
        fwd = float(first["evaluations per item"])
        bwd = float(first.get("backward passes per item") or 0.0)
        cells[key] = {
            "n": len(rs),
            "PSNR": sum(psnr) / len(psnr) if psnr else math.nan,
            "FD": float(first["FD"]) if first.get("FD") else math.nan,
            "accuracy": sum(float(r["accuracy"]) for r in rs) / len(rs) if first.get("accuracy") else math.nan,
            "forward": fwd,
            "backward": bwd,
            "cost": fwd + 2.0 * bwd,
            "seconds": float(first["seconds per item"]),
        }
    return cells


def plot(cells: dict, sigma: float, metric: str, x: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(k[1] == t and k[2] == sigma for k in cells)]
    if not tasks:
        return
    cols = min(4, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.2 * cols, 9.0), 3.4 * rows + 1.0),
                             squeeze=False)
    for i, task in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        for solver, name in NAMES.items():
            pts = sorted(
                (v[x], v[metric])
                for k, v in cells.items()
                if k[0] == solver and k[1] == task and k[2] == sigma and not math.isnan(v[metric])
            )
            if not pts:
                continue
            style = "-" if solver.startswith("mapga") else "--"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3, label=name)
        ax.set_xscale("log")
        if metric == "FD":
            ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("network cost per digit (forward + 2 x backward)" if x == "cost" else "seconds per digit")
        ax.set_ylabel(metric + (" (lower is better)" if metric == "FD" else " (dB)"))
        ax.grid(True, which="both", alpha=0.3)
    for j in range(len(tasks), rows * cols):
        axes[j // cols][j % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), frameon=False)
    fig.suptitle(f"MNIST, sigma_y = {sigma:g}: {metric} against cost")
    fig.tight_layout(rect=(0, 0.16 / rows, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def pareto(cells: dict, sigma: float, x: str, bins: list, metric: str = "FD") -> list[str]:
    """Markdown rows: for each budget, the best method per task within it (lowest FD, or
    highest PSNR)."""
    tasks = [t for t in TASKS if any(k[1] == t and k[2] == sigma for k in cells)]
    unit = "network cost" if x == "cost" else "seconds per digit"
    lines = [f"| {unit} <= | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    better = (lambda a, b: a < b) if metric == "FD" else (lambda a, b: a > b)
    for b in bins:
        row = [f"{b:g}"]
        for task in tasks:
            best = None
            for k, v in cells.items():
                if k[1] != task or k[2] != sigma or v[x] > b or math.isnan(v[metric]):
                    continue
                if best is None or better(v[metric], best[1][metric]):
                    best = (k, v)
            row.append("" if best is None else
                       f"{NAMES.get(best[0][0], best[0][0])} @{best[0][3]}: {best[1][metric]:.3g}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the evaluation folder (with results.csv)")
    ap.add_argument("--no-install", action="store_true", help="never install matplotlib")
    args = ap.parse_args()
    csv_path = args.out / "results.csv"
    if not csv_path.is_file():
        sys.exit(f"{csv_path}: not found (run `mapga eval pipelines/frontier_mnist.mapga --out {args.out}` first)")
    ensure_matplotlib(args.no_install)
    cells = read_cells(csv_path)
    if not cells:
        sys.exit(f"{csv_path}: no finished cells")
    sigmas = sorted({k[2] for k in cells})
    md = ["# The quality/compute frontier", "",
          "The best method among the cells that cost at most the budget, per task (method @ its",
          "budget param: value). Network cost = forward evaluations + 2 x backward passes per digit.",
          f"Cells: {len(cells)}; digits per cell: {min(v['n'] for v in cells.values())} to {max(v['n'] for v in cells.values())}.", ""]
    for s in sigmas:
        tag = f"{s:g}"
        for metric in ("FD", "PSNR"):
            plot(cells, s, metric, "cost", args.out / f"frontier_{metric}_sigma{tag}.png")
        plot(cells, s, "FD", "seconds", args.out / f"frontier_seconds_sigma{tag}.png")
        for metric in ("FD", "PSNR"):
            md += [f"## sigma_y = {tag}: best {metric} by network cost", ""]
            md += pareto(cells, s, "cost", BUDGETS, metric) + [""]
        md += [f"## sigma_y = {tag}: best FD by seconds per digit", ""]
        md += pareto(cells, s, "seconds", SECONDS) + [""]
    (args.out / "pareto.md").write_text("\n".join(md))
    print(f"wrote the figures and pareto.md to {args.out}")


if __name__ == "__main__":
    main()
