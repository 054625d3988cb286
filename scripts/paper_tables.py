#!/usr/bin/env python3
"""The README's tables of the paper comparison, from a finished `mapga eval` folder.

    mapga eval pipelines/eval_paper_mnist.mapga --out out/eval/paper
    python3 scripts/paper_tables.py out/eval/paper > tables.md

Reads every `cells/*/cell.json` of the folder (standard library only) and prints Markdown
tables laid out like the paper's Tables 1 and 4: one row per solver, one column per task, for
the Fréchet distance in classifier features (the MNIST stand-in for FID; lower is better), the
mean PSNR (dB) and the classifier accuracy (%) of the restorations. A cell that failed or has
not run shows as `-`. The best value of each column is in bold.
"""

import json
import statistics
import sys
from pathlib import Path

TASKS = ["box50", "half", "expand", "box25", "sr2x", "altlines", "deblur", "supres4x"]
INPAINT = TASKS[:6]
NOISELESS = ["mapga_d_np", "mapga_d", "mapga_np", "mapga", "pigdm", "ddrm", "dps", "diffpir",
             "reddiff", "ct_zsie"]
NOISY = ["mapga", "pigdm", "ddrm", "dps", "diffpir", "reddiff", "ct_zsie"]
NAMES = {"mapga_d_np": "MAP-GA(D,NP)", "mapga_d": "MAP-GA(D)", "mapga_np": "MAP-GA(NP)",
         "mapga": "MAP-GA", "pigdm": "Pi-GDM", "ddrm": "DDRM", "dps": "DPS",
         "diffpir": "DiffPIR", "reddiff": "RED-diff", "ct_zsie": "CT-ZSIE"}
# (report, label, format, lower is better)
METRICS = [("FD", "Fréchet distance in classifier features (lower is better)", "{:.1f}", True),
           ("PSNR", "PSNR in dB (higher is better)", "{:.2f}", False),
           ("accuracy", "classifier accuracy in % (higher is better)", "{:.0f}", False)]


def mean(v):
    if isinstance(v, list):
        xs = [float(x) for x in v]
        return statistics.fmean(xs) if xs else None
    return None if v is None else float(v)


def load(folder: Path) -> dict:
    cells = {}
    for path in sorted(folder.glob("cells/*/cell.json")):
        c = json.loads(path.read_text())
        if c.get("status") != "ok":
            continue
        p = c["params"]
        cells[(p["solver"], p["task"], float(p["sigma_y"]))] = c
    return cells


def table(cells, solvers, tasks, sigma_y, report, fmt, lower, scale=1.0):
    values = {(s, t): mean(cells[(s, t, sigma_y)]["reports"].get(report))
              for s in solvers for t in tasks if (s, t, sigma_y) in cells}
    best = {}
    for t in tasks:
        col = [v for (s, tt), v in values.items() if tt == t and v is not None]
        if col:
            best[t] = min(col) if lower else max(col)
    lines = ["| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for s in solvers:
        row = []
        for t in tasks:
            v = values.get((s, t))
            if v is None:
                row.append("-")
                continue
            text = fmt.format(v * scale)
            row.append(f"**{text}**" if v == best.get(t) else text)
        lines.append(f"| {NAMES[s]} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: paper_tables.py EVAL_FOLDER")
    cells = load(Path(sys.argv[1]))
    if not cells:
        sys.exit(f"no finished cells in {sys.argv[1]}/cells")
    for report, label, fmt, lower in METRICS:
        scale = 100.0 if report == "accuracy" else 1.0
        print(f"**Noiseless, {label}.**\n")
        print(table(cells, NOISELESS, TASKS, 0.0, report, fmt, lower, scale) + "\n")
    for sigma_y in (0.05, 0.1):
        for report, label, fmt, lower in METRICS[:2]:
            print(f"**Noisy inpainting, sigma_y = {sigma_y}, {label}.**\n")
            print(table(cells, NOISY, INPAINT, sigma_y, report, fmt, lower) + "\n")


if __name__ == "__main__":
    main()
