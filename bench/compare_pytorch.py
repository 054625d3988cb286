#!/usr/bin/env python3
"""mapga (candle, CPU) against PyTorch (CPU) on the same networks, side by side, in one run.

    python3 bench/compare_pytorch.py                # everything (about 15-30 min on 2 cores)
    python3 bench/compare_pytorch.py --quick        # a smoke test: few repetitions
    python3 bench/compare_pytorch.py --threads 1 --reps 20 --json out.json

Both sides load the same safetensors weights: the PyTorch twin of mapga's U-Net
(`train/mapga_train/unet.py`) and mapga's own loader (`Network::load`, what `mapga run` uses,
in the Rust worker `bench/worker.rs`, which this script builds with cargo and talks to over
stdin/stdout, so the timings exclude process start and model loading). Per case and operation
both sides warm up, then run one repetition each, alternating (the order flips every
repetition), and the medians are compared.

Networks: (a) the shipped MNIST models `models/mnist/{cm,denoiser}` (1x28x28) and (b) a 3x64x64
U-Net of ImageNet-64 shape (channels 32, channel_mult [1, 2, 2], one residual block per level,
993,507 parameters) with seeded random weights written here by the PyTorch twin to a temporary
folder (safetensors + RON card), at batch 1 and 16. Operations:

* fwd:  cm(z, t), no gradients;
* vjp:  d/dz sum(cm(z, t) * v), weights constant (PyTorch: requires_grad False and
        torch.autograd.grad);
* iter: one MAP-GA inner step of box25 inpainting, noiseless, eps 0.002, as `std.solvers.mapga`
        runs it: CM forward, the likelihood and prior surrogates (one denoiser forward at eps,
        no gradient through it), the backward to z and the sgd step (lr eps^2).

GFLOP/s count the conv multiply-adds of one forward (forward hooks on the PyTorch model) twice;
a VJP counts as 2 forwards and an iteration as 3 (CM VJP + denoiser forward), although mapga's
autograd also computes weight gradients. The ceiling is a 1024^3 f32 matmul timed on both
sides in the same run. Also: the peak memory of one VJP (separate fresh processes, peak RSS
over the model-loaded baseline), the interpreter's overhead (`mapga run` of `bench/tax.mapga`
against the same iterations as a hand-written Rust loop), and the RSS of a long MAP-GA run
(per-iteration allocation growth). The last line is `worst ratio mapga/pytorch: X.XX`, the
largest ratio over the vjp and iter cases.

If PyTorch, safetensors or numpy is missing, the script says so and installs
`train/requirements.txt` (torch, about 5 GB) into `bench/.venv`, then reruns itself there
(`--no-install` to fail instead).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv"
T = 1.0  # the level the timed iterations run at
EPS = 0.002  # MAP-GA's eps (the CM's sigma_min); sgd lr = sigma_y^2 + eps^2 with sigma_y = 0
SIGMA_DATA = 0.5
SIGMA_MIN = 0.002
GEMM_N = 1024

#: The ImageNet-64-shaped network: ~1M parameters like the issue's measurements.
IN64 = {"channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "attention": False,
        "groups": 8, "embedding": 64}


def say(*args) -> None:
    print(*args, flush=True)


def note(*args) -> None:
    """Progress, on stderr (stdout is the report)."""
    print(*args, file=sys.stderr, flush=True)


# ── dependencies ───────────────────────────────────────────────────────────────────────────


def ensure_dependencies(args) -> None:
    """Imports torch, safetensors and numpy, or installs them into bench/.venv and reruns."""
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        return
    except ImportError as e:
        missing = e.name
    venv_python = VENV / "bin" / "python"
    if args.no_install or Path(sys.executable).resolve() == venv_python.resolve():
        sys.exit(f"error: the Python package `{missing}` is missing; install "
                 f"train/requirements.txt (pip install -r train/requirements.txt)")
    say(f"`{missing}` is not installed: installing train/requirements.txt (PyTorch CPU, ~5 GB) "
        f"into {VENV.relative_to(ROOT)} with pip, then rerunning there")
    if not venv_python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(venv_python), "-m", "pip", "install", "-q", "-r",
                    str(ROOT / "train" / "requirements.txt")], check=True)
    os.execv(str(venv_python), [str(venv_python), *sys.argv])


# ── PyTorch side ───────────────────────────────────────────────────────────────────────────


def torch_setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    sys.path.insert(0, str(ROOT / "train"))
    return torch


def read_card(path: Path) -> tuple[str, list[int], dict]:
    """kind, image_shape and hyperparameters of a RON model card (the fields written by
    train/mapga_train/export.py)."""
    text = path.read_text()
    kind = re.search(r"kind:\s*(\w+)", text).group(1)
    shape = [int(v) for v in re.search(r"image_shape:\s*\(([^)]*)\)", text).group(1).split(",")]
    hp = json.loads(re.search(r"hyperparameters:\s*(\{[^}]*\})", text).group(1))
    return kind, shape, hp


def torch_load(weights: Path):
    """The PyTorch twin of the network `weights` (+ its card), in eval mode, weights constant."""
    from safetensors.torch import load_file

    from mapga_train.unet import UNet, UNetConfig

    _, shape, hp = read_card(weights.with_suffix(".ron"))
    net = UNet(UNetConfig(in_channels=shape[0], **hp))
    net.load_state_dict(load_file(str(weights)))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, shape


def write_random_unet(torch, path: Path, kind: str, seed: int) -> None:
    """A seeded random U-Net of ImageNet-64 shape as safetensors + RON card."""
    from mapga_train.export import save_weights, write_card
    from mapga_train.unet import UNet, UNetConfig

    torch.manual_seed(seed)
    net = UNet(UNetConfig(in_channels=3, **IN64))
    sha = save_weights(net, path)
    write_card(path.with_suffix(".ron"), {
        "name": f"bench-in64-{kind.lower()}", "kind": kind, "architecture": "unet",
        "image_shape": (3, 64, 64), "value_range": (-1.0, 1.0), "sigma_data": SIGMA_DATA,
        "sigma_min": SIGMA_MIN, "sigma_max": 80.0, "hyperparameters": dict(IN64),
        "provenance": f"bench/compare_pytorch.py: PyTorch default initialisation, seed {seed}",
        "weights_sha256": sha,
    })


def consistency(torch, net, x, t: float):
    """mapga's Network::consistency: c_skip(t) x + c_out(t) F(c_in x, ln(t)/4)."""
    sd, smin = SIGMA_DATA, SIGMA_MIN
    c_skip = sd * sd / ((t - smin) ** 2 + sd * sd)
    c_out = sd * (t - smin) / math.sqrt(sd * sd + t * t)
    c_in = 1.0 / math.sqrt(t * t + sd * sd)
    c_noise = torch.full((x.shape[0],), math.log(t) / 4.0, dtype=x.dtype)
    return c_skip * x + c_out * net(x * c_in, c_noise)


def denoise(torch, net, x, s: float):
    """mapga's Network::denoise: EDM's c_skip x + c_out F(c_in x, ln(sigma)/4)."""
    sd = SIGMA_DATA
    c_skip = sd * sd / (s * s + sd * sd)
    c_out = s * sd / math.sqrt(s * s + sd * sd)
    c_in = 1.0 / math.sqrt(s * s + sd * sd)
    c_noise = torch.full((x.shape[0],), math.log(s) / 4.0, dtype=x.dtype)
    return c_skip * x + c_out * net(x * c_in, c_noise)


class TorchProblem:
    """bench/problem.rs in PyTorch: box25 inpainting of a random batch at level T."""

    def __init__(self, torch, cm, den, shape, batch: int):
        self.torch, self.cm, self.den = torch, cm, den
        c, h, w = shape
        g = torch.Generator().manual_seed(0)
        full = (batch, c, h, w)
        side = round(0.25 * w)
        top, left = (h - side) // 2, (w - side) // 2
        mask = torch.ones(1, h, w)
        mask[:, top:top + side, left:left + side] = 0.0
        self.mask = mask
        x_true = (torch.randn(full, generator=g) * 0.5).clamp(-1, 1)
        self.y = mask * x_true
        self.z = torch.randn(full, generator=g) * T
        self.v = torch.randn(full, generator=g)
        # (eps^2 A A^T + sigma_y^2 I)^-1 with sigma_y = 0: 1 / (eps^2 m^2) where m != 0, else 0.
        d = mask * mask * (EPS * EPS)
        self.gram_inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))

    def forward(self):
        with self.torch.no_grad():
            return consistency(self.torch, self.cm, self.z, T)

    def vjp(self):
        z = self.z.detach().requires_grad_(True)
        loss = (consistency(self.torch, self.cm, z, T) * self.v).sum()
        (g,) = self.torch.autograd.grad(loss, z)
        return g

    def iteration(self):
        torch = self.torch
        z = self.z.detach().requires_grad_(True)
        x = consistency(torch, self.cm, z, T)
        # log_likelihood: r = y - A x, w = stop_grad(K^-1 r), value <r0, w>/2 - <r, w>.
        r = self.y - self.mask * x
        r0 = r.detach()
        w = r0 * self.gram_inv
        ll = 0.5 * (r0 * w).sum() - (r * w).sum()
        # log_prior: sum(stop_grad(score) * (x - stop_grad(x))), score = (D(x0, eps) - x0) / eps^2.
        x0 = x.detach()
        with torch.no_grad():
            score = (denoise(torch, self.den, x0, EPS) - x0) / (EPS * EPS)
        lp = (score * (x - x0)).sum()
        (g,) = torch.autograd.grad(ll + lp, z)
        return self.z + (EPS * EPS) * g  # sgd ascent step

    def run(self, op: str):
        return {"fwd": self.forward, "vjp": self.vjp, "iter": self.iteration}[op]()


def conv_macs(torch, net, shape, batch: int) -> int:
    """Multiply-adds of every conv in one forward, counted with forward hooks."""
    total = [0]

    def hook(mod, _inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += out.numel() * (mod.in_channels // mod.groups) * k

    hooks = [m.register_forward_hook(hook) for m in net.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        consistency(torch, net, torch.zeros(batch, *shape), T)
    for h in hooks:
        h.remove()
    return total[0]


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


# ── mapga side ─────────────────────────────────────────────────────────────────────────────


def cargo_target_dir() -> Path:
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return Path(json.loads(out)["target_directory"])


def build() -> tuple[Path, Path]:
    note("building: cargo build --release --bin mapga --example bench_worker")
    subprocess.run(["cargo", "build", "--release", "--bin", "mapga", "--example", "bench_worker"],
                   cwd=ROOT, check=True, stdout=sys.stderr)
    target = cargo_target_dir() / "release"
    return target / "mapga", target / "examples" / "bench_worker"


class Worker:
    """The Rust worker process (bench/worker.rs)."""

    def __init__(self, exe: Path, threads: int):
        self.proc = subprocess.Popen([str(exe), "--threads", str(threads)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, *words) -> dict:
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker exited (command: {' '.join(map(str, words))})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"worker: {reply.get('error')} (command: {' '.join(map(str, words))})")
        return reply

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=60)


# ── memory ─────────────────────────────────────────────────────────────────────────────────


def rss_kb() -> tuple[int, int]:
    """VmRSS and VmHWM (peak) of this process in kB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            fields[line.split(":")[0]] = int(line.split()[1])
    return fields["VmRSS"], fields["VmHWM"]


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_probe(args) -> None:
    """`--mem-probe`: in this fresh process, load the CM, build the inputs, then one VJP; print
    its peak RSS over the baseline as JSON."""
    torch = torch_setup(args.threads)
    cm, shape = torch_load(Path(args.mem_probe))
    p = TorchProblem(torch, cm, None, shape, args.batch)
    reset = reset_peak()
    before, peak_before = rss_kb()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g = p.vjp()
    _, peak = rss_kb()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del g
    if reset:
        out = {"baseline_kb": before, "peak_kb": peak, "delta_kb": max(0, peak - before),
               "method": "VmHWM after clear_refs"}
    else:
        out = {"baseline_kb": maxrss_before, "peak_kb": maxrss,
               "delta_kb": max(0, maxrss - maxrss_before), "method": "ru_maxrss delta"}
    print(json.dumps(out), flush=True)


def torch_memory(weights: Path, batch: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--mem-probe", str(weights), "--batch",
                          str(batch), "--threads", str(threads)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mapga_memory(exe: Path, weights: Path, batch: int, threads: int) -> dict:
    w = Worker(exe, threads)
    try:
        w("load", "cm", weights)
        return w("mem", "cm", batch)
    finally:
        w.close()


# ── the interpreter's tax ──────────────────────────────────────────────────────────────────


def mapga_run_seconds(mapga: Path, iters: int, threads: int, out: Path) -> float:
    """`mapga run bench/tax.mapga` with `iters` iterations: run.ron's run_seconds (the run
    itself: model loading and the iterations, without process start and checking)."""
    done = subprocess.run([str(mapga), "run", "--quiet", "--threads", str(threads), "--out",
                           str(out), "--set", f"iters={iters}", "--set", "n=16",
                           "bench/tax.mapga"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mapga run bench/tax.mapga failed:\n{done.stderr}")
    text = (out / "run.ron").read_text()
    return float(re.search(r'"run_seconds":\s*([0-9.eE+-]+)', text).group(1))


def growth_of(rss: list[int], iterations: int) -> dict:
    """Peak RSS over the samples from 10% to 20% of a run of `iterations` iterations against
    the last 10%, and the growth per iteration that difference means (the windows' ends are
    80% of the run apart). The samples need not be one per iteration, only even in time."""
    n = len(rss)
    if n < 10:
        return {"early_kb": 0, "late_kb": 0, "kb_per_iteration": 0.0}
    early, late = max(rss[n // 10:n // 5]), max(rss[n - n // 10:])
    return {"early_kb": early, "late_kb": late,
            "kb_per_iteration": (late - early) / (0.8 * iterations)}


def mapga_run_rss(mapga: Path, iters: int, threads: int, out: Path) -> list[tuple[float, int]]:
    """`mapga run bench/tax.mapga` at batch 1 with `iters` iterations: its RSS (kB) sampled
    every 50 ms, as (seconds, kB) pairs. The samples are even in time, and so in iterations
    after the first second or two (checking, loading), which growth_of's windows skip."""
    proc = subprocess.Popen([str(mapga), "run", "--quiet", "--threads", str(threads), "--out",
                             str(out), "--set", f"iters={iters}", "--set", "n=1",
                             "bench/tax.mapga"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    status = Path(f"/proc/{proc.pid}/status")
    trace, start = [], time.perf_counter()
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    trace.append((time.perf_counter() - start, int(line.split()[1])))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"mapga run bench/tax.mapga failed:\n{err}")
    return trace


# ── the run ────────────────────────────────────────────────────────────────────────────────


def machine_line(torch, threads: int) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "?"
    return (f"machine: {cpu}, {cores} cores available; {threads} threads on both sides; "
            f"torch {torch.__version__}, mapga {rev} (candle 0.11, release build)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p.add_argument("--threads", type=int, default=cores,
                   help=f"threads on both sides (default: all cores, here {cores})")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per side (default 11)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per side (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test: 3 repetitions, 1 warm-up, short tax (2 repetitions) and growth runs")
    p.add_argument("--gap-ms", type=float, default=20.0,
                   help="pause before each timed repetition, so the other side's threads are "
                        "idle (default 20)")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--cases", default="mnist,in64", help="networks: mnist, in64 (comma-separated)")
    p.add_argument("--batches", default="1,16", help="batch sizes (comma-separated)")
    p.add_argument("--tax-iters", type=int, default=None,
                   help="iterations of the interpreter-tax runs (default 10)")
    p.add_argument("--growth-iters", type=int, default=None,
                   help="iterations of the allocation-growth run (default 1000)")
    p.add_argument("--skip", default="",
                   help="sections to leave out: memory, tax, growth (comma-separated)")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--no-install", action="store_true",
                   help="fail instead of installing missing Python packages")
    p.add_argument("--mem-probe", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads < 1:
        p.error("--threads must be at least 1")
    quick = args.quick
    args.reps = args.reps or (3 if quick else 11)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    args.tax_iters = args.tax_iters or (2 if quick else 10)
    args.tax_reps = 2 if quick else 9
    args.tax_cli_reps = 1 if quick else 5
    args.growth_iters = args.growth_iters or (200 if quick else 1000)
    args.skip = {s for s in args.skip.split(",") if s}
    return args


def main() -> None:
    args = parse_args()
    ensure_dependencies(args)
    if args.mem_probe:
        memory_probe(args)
        return
    torch = torch_setup(args.threads)
    mapga, worker_exe = (build() if not args.no_build else
                         (cargo_target_dir() / "release" / "mapga",
                          cargo_target_dir() / "release" / "examples" / "bench_worker"))
    tmp = Path(tempfile.mkdtemp(prefix="mapga-bench-"))
    results: dict = {"threads": args.threads, "reps": args.reps, "warmup": args.warmup}
    try:
        run_all(args, torch, mapga, worker_exe, tmp, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    say(f"worst ratio mapga/pytorch: {results['worst_ratio']:.2f}")


def run_all(args, torch, mapga: Path, worker_exe: Path, tmp: Path, results: dict) -> None:
    networks = {}
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if "mnist" in cases:
        networks["mnist"] = (ROOT / "models/mnist/cm.safetensors",
                             ROOT / "models/mnist/denoiser.safetensors")
    if "in64" in cases:
        cm_path, den_path = tmp / "in64_cm.safetensors", tmp / "in64_den.safetensors"
        write_random_unet(torch, cm_path, "Consistency", 0)
        write_random_unet(torch, den_path, "Denoiser", 1)
        networks["in64"] = (cm_path, den_path)
    batches = [int(b) for b in args.batches.split(",")]

    w = Worker(worker_exe, args.threads)
    threads = w("threads")
    if threads["rayon"] != args.threads or threads["candle"] != args.threads:
        raise RuntimeError(f"the worker runs {threads} threads, not {args.threads}")
    say(machine_line(torch, args.threads))
    results["machine"] = machine_line(torch, args.threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    results["load_average"] = load
    if load > 0.25 * cores:
        say(f"warning: load average {load:.1f} on {cores} cores before the run: other work is "
            f"running, so these timings are noisy")

    # The GEMM ceiling, both sides.
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    torch.mm(a, b)
    t_ms, m_ms = [], []
    w("gemm", GEMM_N, 1)  # warm-up
    for _ in range(max(args.reps, 5)):
        t_ms.append(time_once(lambda: torch.mm(a, b)))
        m_ms.append(w("gemm", GEMM_N, 1)["median_ms"])
    flop = 2 * GEMM_N**3
    gemm = {"torch_ms": statistics.median(t_ms), "mapga_ms": statistics.median(m_ms)}
    gemm["torch_gflops"] = flop / gemm["torch_ms"] / 1e6
    gemm["mapga_gflops"] = flop / gemm["mapga_ms"] / 1e6
    results["gemm"] = gemm
    say(f"gemm {GEMM_N}^3 f32 (the ceiling): torch {gemm['torch_ms']:.1f} ms = "
        f"{gemm['torch_gflops']:.0f} GFLOP/s, mapga (candle/gemm) {gemm['mapga_ms']:.1f} ms = "
        f"{gemm['mapga_gflops']:.0f} GFLOP/s")

    # Forward, VJP, iteration.
    rows = []
    for name, (cm_path, den_path) in networks.items():
        cm, shape = torch_load(cm_path)
        den, _ = torch_load(den_path)
        w("load", f"{name}_cm", cm_path)
        w("load", f"{name}_den", den_path)
        for batch in batches:
            p = TorchProblem(torch, cm, den, shape, batch)
            fwd_flop = 2 * conv_macs(torch, cm, shape, batch)
            label = f"{name} {'x'.join(map(str, shape))} b{batch}"
            for op, mult in (("fwd", 1), ("vjp", 2), ("iter", 3)):
                note(f"timing {label} {op}")
                for _ in range(args.warmup):
                    p.run(op)
                w("time", op, f"{name}_cm", f"{name}_den", batch, 0, args.warmup)
                t_ms, m_ms = [], []
                for rep in range(args.reps):
                    sides = ["torch", "mapga"] if rep % 2 == 0 else ["mapga", "torch"]
                    for side in sides:
                        time.sleep(args.gap_ms / 1e3)  # let the other side's threads go idle
                        if side == "torch":
                            t_ms.append(time_once(lambda: p.run(op)))
                        else:
                            m_ms.append(w("time", op, f"{name}_cm", f"{name}_den", batch, 1,
                                          0)["median_ms"])
                tm, mm = statistics.median(t_ms), statistics.median(m_ms)
                flop = mult * fwd_flop
                row = {"case": f"{label} {op}", "network": name, "batch": batch, "op": op,
                       "torch_ms": tm, "mapga_ms": mm, "ratio": mm / tm,
                       "torch_gflops": flop / tm / 1e6, "mapga_gflops": flop / mm / 1e6,
                       "gflop": flop / 1e9, "torch_all_ms": t_ms, "mapga_all_ms": m_ms}
                rows.append(row)
            del p
    results["cases"] = rows
    say("")
    head = (f"{'case':<28} {'torch ms':>10} {'mapga ms':>10} {'mapga/torch':>11} "
            f"{'torch GFLOP/s':>13} {'mapga GFLOP/s':>13}")
    say(head)
    say("-" * len(head))
    for r in rows:
        say(f"{r['case']:<28} {r['torch_ms']:>10.1f} {r['mapga_ms']:>10.1f} "
            f"{r['ratio']:>10.2f}x {r['torch_gflops']:>13.1f} {r['mapga_gflops']:>13.1f}")
    say(f"(GFLOP/s: conv FLOPs, VJP = 2x and iteration = 3x the forward's; gemm ceiling "
        f"torch {gemm['torch_gflops']:.0f}, mapga {gemm['mapga_gflops']:.0f} GFLOP/s; "
        f"medians of {args.reps} alternating repetitions after {args.warmup} warm-up runs)")
    w.close()

    if "memory" not in args.skip:
        say("")
        say("peak memory of one VJP (fresh process each; peak RSS over the model-loaded baseline):")
        say(f"{'case':<28} {'torch MB':>10} {'mapga MB':>10} {'mapga/torch':>11}")
        mem = []
        for name, (cm_path, _) in networks.items():
            _, shape = read_card(cm_path.with_suffix(".ron"))[0:2]
            for batch in batches:
                note(f"memory {name} b{batch}")
                t = torch_memory(cm_path, batch, args.threads)
                m = mapga_memory(worker_exe, cm_path, batch, args.threads)
                label = f"{name} {'x'.join(map(str, shape))} b{batch} vjp"
                ratio = m["delta_kb"] / t["delta_kb"] if t["delta_kb"] else float("nan")
                mem.append({"case": label, "torch": t, "mapga": m, "ratio": ratio})
                say(f"{label:<28} {t['delta_kb'] / 1024:>10.1f} {m['delta_kb'] / 1024:>10.1f} "
                    f"{ratio:>10.2f}x")
        say(f"(method: torch {mem[0]['torch']['method']}, mapga {mem[0]['mapga']['method']})"
            if mem else "")
        results["memory"] = mem

    def mnist_worker() -> Worker:
        w = Worker(worker_exe, args.threads)
        w("load", "cm", ROOT / "models/mnist/cm.safetensors")
        w("load", "den", ROOT / "models/mnist/denoiser.safetensors")
        return w

    if "tax" not in args.skip:
        w = mnist_worker()
        n = args.tax_iters
        note(f"interpreter tax: {args.tax_reps} x ({n} iterations by hand, bench/tax.mapga with "
             f"{n + 1} and 1 iterations in the same process, then through `mapga run`)")
        w("loop", "cm", "den", 16, 1)  # warm-up

        def in_process(iters: int, out: Path) -> float:
            return w("pipeline", ROOT / "bench/tax.mapga", out, "n=16",
                     f"iters={iters}")["run_seconds"]

        in_process(1, tmp / "tax-warm")
        hand, interp, cli = [], [], []
        for rep in range(args.tax_reps):
            # Alternate which side goes first, so a drift of the machine's speed over the
            # repetition (another job, the clock) favours neither.
            first_hand = rep % 2 == 0
            if first_hand:
                hand.append(w("loop", "cm", "den", 16, n)["seconds"] / n)
            full = in_process(n + 1, tmp / f"tax{rep}a")
            one = in_process(1, tmp / f"tax{rep}b")
            interp.append((full - one) / n)
            if not first_hand:
                hand.append(w("loop", "cm", "den", 16, n)["seconds"] / n)
            if rep < args.tax_cli_reps:
                full = mapga_run_seconds(mapga, n + 1, args.threads, tmp / f"taxcli{rep}a")
                one = mapga_run_seconds(mapga, 1, args.threads, tmp / f"taxcli{rep}b")
                cli.append((full - one) / n)
        w.close()
        h, i = statistics.median(hand), statistics.median(interp)
        ratios = [b / a - 1 for a, b in zip(hand, interp)]
        tax = {"iterations": n, "reps": args.tax_reps, "hand_ms": h * 1e3, "interp_ms": i * 1e3,
               "overhead_percent": (i / h - 1) * 100,
               "overhead_percent_range": [min(ratios) * 100, max(ratios) * 100],
               "hand_all_s": hand, "interp_all_s": interp, "mapga_run_all_s": cli}
        say("")
        say(f"interpreter tax (MAP-GA iteration, MNIST box25, batch 16, {n} iterations, "
            f"medians of {args.tax_reps} alternating repetitions in one process): hand-written "
            f"Rust loop {tax['hand_ms']:.1f} ms/iteration, bench/tax.mapga through the interpreter "
            f"{tax['interp_ms']:.1f} ms/iteration: overhead {tax['overhead_percent']:+.1f}% "
            f"(per repetition {tax['overhead_percent_range'][0]:+.1f}% to "
            f"{tax['overhead_percent_range'][1]:+.1f}%; target < 2%)")
        if cli:
            c = statistics.median(cli)
            tax["mapga_run_ms"] = c * 1e3
            say(f"  the same through the `mapga run` binary (a fresh process per run, in the first "
                f"{len(cli)} repetitions, median): {c * 1e3:.1f} ms/iteration ({(c / h - 1) * 100:+.1f}% over the "
                f"hand-written loop; range {min(cli) * 1e3:.1f}-{max(cli) * 1e3:.1f} ms)")
        results["tax"] = tax

    if "growth" not in args.skip:
        n = args.growth_iters
        note(f"allocation growth: {n} MAP-GA iterations (MNIST, batch 1), worker and mapga run")
        w = mnist_worker()
        g = w("growth", "cm", "den", 1, n)
        w.close()
        hand = growth_of(g["rss_kb"], n)
        trace = mapga_run_rss(mapga, n, args.threads, tmp / "growth")
        run = growth_of([kb for _, kb in trace], n)
        growth = {"iterations": n, "hand_loop": hand, "mapga_run": run,
                  "hand_rss_kb": g["rss_kb"], "mapga_run_trace": trace,
                  "hand_seconds": g["seconds"], "finite": g["finite"]}
        results["growth"] = growth
        ok = max(hand["kb_per_iteration"], run["kb_per_iteration"]) < 1.0
        if n < 1000:
            verdict = "too short a run for a verdict (the full run has 1,000 iterations)"
        else:
            verdict = "no per-iteration growth" if ok else "GROWS (over 1 kB/iteration)"
        growth["verdict"] = verdict
        say("")
        say(f"allocation growth ({n} MAP-GA iterations, MNIST box25, batch 1; peak RSS over "
            f"iterations {n // 10}-{n // 5} against the last {n // 10}): hand-written loop "
            f"{hand['early_kb'] / 1024:.1f} -> {hand['late_kb'] / 1024:.1f} MB "
            f"({hand['kb_per_iteration']:+.2f} kB/iteration), `mapga run` "
            f"{run['early_kb'] / 1024:.1f} -> {run['late_kb'] / 1024:.1f} MB "
            f"({run['kb_per_iteration']:+.2f} kB/iteration, sampled every 50 ms): "
            + verdict)
    finish(rows, results)


def finish(rows, results: dict) -> None:
    ratios = [r["ratio"] for r in rows if r["op"] in ("vjp", "iter")]
    results["worst_ratio"] = max(ratios) if ratios else float("nan")
    say("")


if __name__ == "__main__":
    main()
