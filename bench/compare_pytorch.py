#!/usr/bin/env python3
"""mapga (candle, CPU) against PyTorch (CPU) on the same networks, side by side, in one run.

    python3 bench/compare_pytorch.py                # everything, at 1 thread and at all cores
    python3 bench/compare_pytorch.py --quick        # a smoke test: few repetitions
    python3 bench/compare_pytorch.py --threads 1 --reps 20 --json out.json
    python3 bench/compare_pytorch.py --cases cm64 --skip tax,growth   # the full IN64 CM (opt-in)

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
(per-iteration allocation growth). By default the comparison runs twice, at 1 thread and at
all cores (`--threads 1,2`; a table each, fresh processes); the last line is `worst ratio
mapga/pytorch over 1 and 2 threads: X.XX`, the largest ratio over the vjp and iter cases of
both. With one count (`--threads 2`) the last line is `worst ratio mapga/pytorch: X.XX`.

(c) Opt-in (`--cases cm64`, not in the default set: it writes 2.3 GB of checkpoints and its
timings take several minutes): OpenAI's ImageNet-64 consistency model at full size
(`scripts/adm_reference.py`'s `cm_imagenet64` config, mapga preset `openai-cm-imagenet64`,
295,899,267 parameters in 541 tensors), at batch 1 unless `--batches` says otherwise. The
reference module writes seeded random weights (seed 0) once to the temporary folder, as
`cm64.pt` (torch.save with every tensor a view into one of two flat float32 storages, the
layout of OpenAI's fp16 training checkpoints) and `cm64.safetensors` (the same values), no card.
The random init keeps activations O(1) through the network: conv and linear weights
N(0, 1/fan_in), biases N(0, 0.2^2), GroupNorm weights 1 + N(0, 0.3^2) and biases N(0, 0.2^2),
label_emb N(0, 0.5^2) (the scheme of tests/fixtures/adm; the official init zeroes the output
convs, which would make every VJP trivial). Both sides time fwd (the consistency function f(z, t)
at t = 1: c_noise = 250 ln t, the boundary-condition scalings, class label 3) and vjp; PyTorch
runs the reference module with the safetensors loaded into it, mapga the worker's
`Network::load_as` of the same file (release inferred from the tensors) with `with_labels`.
Before timing, mapga's f and VJP on its inputs are recomputed by PyTorch and the relative errors
printed. Extra sections: the peak memory of one VJP, and load times: each file loaded by each
side in a fresh process (`torch.load` or `safetensors.torch.load_file` + `load_state_dict`;
mapga's `Network::load_as` call, timed inside the worker; files in the page cache).

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


def in_venv() -> bool:
    """True when this interpreter runs inside VENV."""
    return Path(sys.prefix).resolve() == VENV.resolve()


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
    # Inside the venv already (sys.prefix is the venv's folder). Not `sys.executable`: the
    # venv's python is a symlink to the system one, so resolving it compares equal from outside
    # too, which made every run after the first refuse to use the venv it had made.
    if args.no_install or in_venv():
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

    def __init__(self, torch, cm, den, shape, batch: int, f=None):
        self.torch, self.cm, self.den = torch, cm, den
        # The consistency function x -> cm(x, T): mapga's own parameterisation by default.
        self.f = f or (lambda x: consistency(torch, cm, x, T))
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
            return self.f(self.z)

    def vjp(self):
        z = self.z.detach().requires_grad_(True)
        loss = (self.f(z) * self.v).sum()
        (g,) = self.torch.autograd.grad(loss, z)
        return g

    def iteration(self):
        torch = self.torch
        z = self.z.detach().requires_grad_(True)
        x = self.f(z)
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


# ── the ImageNet-64 consistency model (case cm64) ──────────────────────────────────────────

#: The class label of the cm64 runs, and the seed of its random weights.
CM64_LABEL = 3
CM64_SEED = 0


def adm_reference():
    """scripts/adm_reference.py, the independent PyTorch ADM U-Net with the official names."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    import adm_reference

    return adm_reference


def cm64_config() -> dict:
    return dict(adm_reference().FULL_CONFIGS["cm_imagenet64"])


def cm64_random_state(torch, seed: int):
    """A seeded random state_dict of the ImageNet-64 CM (official names, float32), scaled so
    activations stay O(1) through the whole network: conv and linear weights N(0, 1/fan_in)
    (the output convs included, which the official init sets to zero), their biases
    N(0, 0.2^2), GroupNorm weights 1 + N(0, 0.3^2) and biases N(0, 0.2^2), label_emb N(0, 0.5^2)
    (the scheme of the test fixtures, tests/fixtures/adm/README.md)."""
    from collections import OrderedDict

    R = adm_reference()
    shapes = R.meta_model(cm64_config()).state_dict()
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, meta in shapes.items():
        t = torch.randn(meta.shape, generator=g, dtype=torch.float32)
        if name.startswith("label_emb."):
            t.mul_(0.5)
        elif meta.ndim >= 2:
            t.mul_(1.0 / math.sqrt(math.prod(meta.shape[1:])))
        elif name.endswith(".weight"):  # GroupNorm (every other weight has ndim >= 2)
            t.mul_(0.3).add_(1.0)
        else:  # biases
            t.mul_(0.2)
        sd[name] = t
    return sd


def flat_view_state_dict(sd):
    """Every tensor a view into one of two flat float32 storages (ndim <= 1 and the rest), the
    layout OpenAI's fp16 training saves (master_params_to_state_dict); as in
    scripts/make_adm_fixtures.py."""
    from collections import OrderedDict

    import torch

    out = OrderedDict(sd)
    for names in ([k for k, v in sd.items() if v.ndim <= 1], [k for k, v in sd.items() if v.ndim > 1]):
        flat = torch.cat([sd[k].reshape(-1) for k in names])
        off = 0
        for k in names:
            n = sd[k].numel()
            out[k] = flat[off:off + n].view(sd[k].shape)
            off += n
    return out


def write_cm64(torch, folder: Path) -> dict:
    """Writes the random-weight IN64 CM as `cm64.pt` (two flat storages) and
    `cm64.safetensors` (the same values), without cards: mapga infers the release from the
    tensors (preset `openai-cm-imagenet64`). Returns the paths and a few facts."""
    from safetensors.torch import save_file

    note("cm64: writing the random-weight ImageNet-64 consistency model (.pt and .safetensors)")
    start = time.perf_counter()
    sd = cm64_random_state(torch, CM64_SEED)
    pt, st = folder / "cm64.pt", folder / "cm64.safetensors"
    torch.save(flat_view_state_dict(sd), pt)
    save_file(sd, str(st))
    params, tensors = sum(v.numel() for v in sd.values()), len(sd)
    del sd
    loaded = torch.load(pt, map_location="cpu", weights_only=True, mmap=True)
    storages = len({v.untyped_storage().data_ptr() for v in loaded.values()})
    del loaded
    if storages != 2:
        raise RuntimeError(f"{pt} has {storages} storages, not 2")
    return {"pt": pt, "safetensors": st, "params": params, "tensors": tensors,
            "storages": storages, "pt_bytes": pt.stat().st_size,
            "safetensors_bytes": st.stat().st_size,
            "write_s": time.perf_counter() - start}


def cm64_load(torch, st: Path):
    """The reference module with the weights of `st`, in eval mode, weights constant."""
    from safetensors.torch import load_file

    with torch.device("meta"):
        net = adm_reference().UNet(**cm64_config())
    net.load_state_dict(load_file(str(st)), strict=True, assign=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def cm64_function(torch, net, batch: int):
    """x -> f(x, T): the consistency function of the OpenAI parameterisation (c_noise =
    250 ln T, the boundary-condition scalings with sigma_data 0.5 and sigma_min 0.002), class
    CM64_LABEL for every image."""
    R = adm_reference()
    c_skip, c_out, c_in = R.consistency_scalings(T)
    labels = torch.full((batch,), CM64_LABEL, dtype=torch.long)

    def f(x):
        times = torch.full((x.shape[0],), R.karras_time(T), dtype=x.dtype)
        return c_skip * x + c_out * net(c_in * x, times, labels)

    return f


def cm64_macs(torch, net, batch: int) -> int:
    """Multiply-adds of one forward: every conv (hooks) and the attention blocks' qkv and
    output projections and their two T x T products (the reference runs these as einsums)."""
    R = adm_reference()
    total = [0]

    def conv_hook(mod, _inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += out.numel() * (mod.in_channels // mod.groups) * k

    def attention_hook(_mod, inp, _out):
        b, c, h, w = inp[0].shape
        t = h * w
        total[0] += b * (4 * c * c * t + 2 * t * t * c)

    hooks = [m.register_forward_hook(conv_hook) for m in net.modules()
             if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(attention_hook) for m in net.modules()
              if isinstance(m, R.AttentionBlock)]
    with torch.no_grad():
        cm64_function(torch, net, batch)(torch.zeros(batch, 3, 64, 64))
    for h in hooks:
        h.remove()
    return total[0]


def torch_load_probe(path: Path) -> dict:
    """In this fresh process: the reference module with the weights of `path` (.pt or
    .safetensors) as a PyTorch user loads them: the module built on the meta device and
    materialised uninitialised (`to_empty`), the file read (`torch.load` / `load_file`), then
    `load_state_dict` (a copy into the module). Milliseconds of each step."""
    import torch
    from safetensors.torch import load_file

    start = time.perf_counter()
    with torch.device("meta"):
        net = adm_reference().UNet(**cm64_config())
    net = net.to_empty(device="cpu")
    build = time.perf_counter()
    if path.suffix == ".pt":
        sd = torch.load(path, map_location="cpu", weights_only=True)
    else:
        sd = load_file(str(path))
    read = time.perf_counter()
    net.load_state_dict(sd, strict=True)
    done = time.perf_counter()
    return {"build_ms": (build - start) * 1e3, "read_ms": (read - build) * 1e3,
            "load_state_dict_ms": (done - read) * 1e3, "total_ms": (done - start) * 1e3,
            "read_and_load_state_dict_ms": (done - build) * 1e3}


def torch_load_time(path: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--load-probe", str(path), "--threads",
                          str(threads)], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mapga_load_time(exe: Path, path: Path, threads: int) -> dict:
    """`Network::load_as` of `path` in a fresh worker: the call's own wall time."""
    w = Worker(exe, threads)
    try:
        return w("loadckpt", "cm", path, CM64_LABEL)
    finally:
        w.close()


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
    if args.mem_kind == "cm64":
        cm, shape = cm64_load(torch, Path(args.mem_probe)), [3, 64, 64]
        p = TorchProblem(torch, cm, None, shape, args.batch, cm64_function(torch, cm, args.batch))
    else:
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


def torch_memory(weights: Path, batch: int, threads: int, kind: str = "card") -> dict:
    out = subprocess.run([sys.executable, __file__, "--mem-probe", str(weights), "--batch",
                          str(batch), "--threads", str(threads), "--mem-kind", kind], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mapga_memory(exe: Path, weights: Path, batch: int, threads: int, kind: str = "card") -> dict:
    w = Worker(exe, threads)
    try:
        if kind == "cm64":
            w("loadckpt", "cm", weights, CM64_LABEL)
        else:
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
    p.add_argument("--threads", default=f"1,{cores}" if cores > 1 else "1",
                   help="threads on both sides; several (comma-separated) run the comparison "
                        f"once per count, a table each (default: 1 and all cores, here "
                        f"1,{cores}); the memory, growth and load sections run at the first "
                        "count only")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per side (default 11)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per side (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test: 3 repetitions, 1 warm-up, short tax (2 repetitions) and growth runs")
    p.add_argument("--gap-ms", type=float, default=20.0,
                   help="pause before each timed repetition, so the other side's threads are "
                        "idle (default 20)")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--cases", default="mnist,in64",
                   help="networks: mnist, in64, cm64 (comma-separated; default mnist,in64: "
                        "cm64, the full ImageNet-64 consistency model, is opt-in)")
    p.add_argument("--batches", default=None,
                   help="batch sizes (comma-separated; default 1,16 for mnist and in64, 1 for "
                        "cm64)")
    p.add_argument("--load-reps", type=int, default=None,
                   help="cm64: fresh-process loads per file and side (default 3, --quick 1)")
    p.add_argument("--tax-iters", type=int, default=None,
                   help="iterations of the interpreter-tax runs (default 10)")
    p.add_argument("--growth-iters", type=int, default=None,
                   help="iterations of the allocation-growth run (default 1000)")
    p.add_argument("--skip", default="",
                   help="sections to leave out: memory, tax, growth, load (comma-separated)")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--no-install", action="store_true",
                   help="fail instead of installing missing Python packages")
    p.add_argument("--mem-probe", help=argparse.SUPPRESS)
    p.add_argument("--mem-kind", default="card", help=argparse.SUPPRESS)
    p.add_argument("--load-probe", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    try:
        args.thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads takes whole numbers, comma-separated, not {args.threads!r}")
    if not args.thread_counts or min(args.thread_counts) < 1:
        p.error("--threads must be at least 1")
    args.threads = args.thread_counts[0]
    quick = args.quick
    args.reps = args.reps or (3 if quick else 11)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    args.tax_iters = args.tax_iters or (2 if quick else 10)
    args.tax_reps = 2 if quick else 9
    args.tax_cli_reps = 1 if quick else 5
    args.growth_iters = args.growth_iters or (200 if quick else 1000)
    args.skip = {s for s in args.skip.split(",") if s}
    args.load_reps = args.load_reps or (1 if quick else 3)
    return args


def main() -> None:
    args = parse_args()
    ensure_dependencies(args)
    if args.mem_probe:
        memory_probe(args)
        return
    if args.load_probe:
        torch_setup(args.threads)
        print(json.dumps(torch_load_probe(Path(args.load_probe))), flush=True)
        return
    if len(args.thread_counts) > 1:
        each_thread_count(args)
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


def each_thread_count(args) -> None:
    """Runs this script once per thread count (fresh processes: PyTorch's pools and the
    worker's are sized at start), each printing its table, then the worst ratio over all."""
    argv = sys.argv[1:]
    # This run's own --threads and --json are replaced in each child.
    skip_next = False
    rest = []
    for a in argv:
        if skip_next:
            skip_next = False
            continue
        if a in ("--threads", "--json"):
            skip_next = True
            continue
        if a.startswith("--threads=") or a.startswith("--json="):
            continue
        rest.append(a)
    combined: dict = {"thread_counts": args.thread_counts, "runs": {}}
    worst = (float("-inf"), None)
    with tempfile.TemporaryDirectory(prefix="mapga-bench-threads-") as tmp:
        for i, n in enumerate(args.thread_counts):
            child = list(rest)
            if i > 0:
                # Thread-independent sections run once, with the first count.
                skips = set(args.skip) | {"memory", "growth", "load"}
                child = [a for j, a in enumerate(child)
                         if a != "--skip" and (j == 0 or child[j - 1] != "--skip")
                         and not a.startswith("--skip=")]
                child += ["--skip", ",".join(sorted(skips))]
                if i == 1 and "--no-build" not in child:
                    child.append("--no-build")
            out = Path(tmp) / f"threads{n}.json"
            say(f"\n=== {n} thread{'s' if n > 1 else ''} ===")
            subprocess.run([sys.executable, __file__, *child, "--threads", str(n),
                            "--json", str(out)], cwd=ROOT, check=True)
            run = json.loads(out.read_text())
            combined["runs"][str(n)] = run
            if run.get("worst_ratio", float("nan")) > worst[0]:
                worst = (run["worst_ratio"], n)
    combined["worst_ratio"] = worst[0]
    combined["worst_threads"] = worst[1]
    if args.json:
        args.json.write_text(json.dumps(combined, indent=2) + "\n")
    counts = " and ".join(str(n) for n in args.thread_counts)
    say(f"worst ratio mapga/pytorch over {counts} threads: {worst[0]:.2f} "
        f"(at {worst[1]} thread{'s' if worst[1] != 1 else ''})")


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
    explicit = [int(b) for b in args.batches.split(",")] if args.batches else None
    batches = explicit or [1, 16]
    cm64 = None
    if "cm64" in cases:
        cm64 = write_cm64(torch, tmp)
        cm64["batches"] = explicit or [1]
        results["cm64_files"] = {k: str(v) if isinstance(v, Path) else v
                                 for k, v in cm64.items()}

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

    def time_ops(p, name: str, cm_name: str, den_name: str, label: str, batch: int, ops,
                 fwd_flop: int) -> None:
        for op, mult in ops:
            note(f"timing {label} {op}")
            for _ in range(args.warmup):
                p.run(op)
            w("time", op, cm_name, den_name, batch, 0, args.warmup)
            t_ms, m_ms = [], []
            for rep in range(args.reps):
                sides = ["torch", "mapga"] if rep % 2 == 0 else ["mapga", "torch"]
                for side in sides:
                    time.sleep(args.gap_ms / 1e3)  # let the other side's threads go idle
                    if side == "torch":
                        t_ms.append(time_once(lambda: p.run(op)))
                    else:
                        m_ms.append(w("time", op, cm_name, den_name, batch, 1, 0)["median_ms"])
            tm, mm = statistics.median(t_ms), statistics.median(m_ms)
            flop = mult * fwd_flop
            rows.append({"case": f"{label} {op}", "network": name, "batch": batch, "op": op,
                         "torch_ms": tm, "mapga_ms": mm, "ratio": mm / tm,
                         "torch_gflops": flop / tm / 1e6, "mapga_gflops": flop / mm / 1e6,
                         "gflop": flop / 1e9, "torch_all_ms": t_ms, "mapga_all_ms": m_ms})

    for name, (cm_path, den_path) in networks.items():
        cm, shape = torch_load(cm_path)
        den, _ = torch_load(den_path)
        w("load", f"{name}_cm", cm_path)
        w("load", f"{name}_den", den_path)
        for batch in batches:
            p = TorchProblem(torch, cm, den, shape, batch)
            fwd_flop = 2 * conv_macs(torch, cm, shape, batch)
            label = f"{name} {'x'.join(map(str, shape))} b{batch}"
            time_ops(p, name, f"{name}_cm", f"{name}_den", label, batch,
                     (("fwd", 1), ("vjp", 2), ("iter", 3)), fwd_flop)
            del p
    if cm64 is not None:
        # Both sides on the same safetensors file: PyTorch loads it into the reference
        # module, mapga with Network::load_as (release inferred from the tensors).
        cm = cm64_load(torch, cm64["safetensors"])
        w("loadckpt", "cm64", cm64["safetensors"], CM64_LABEL)
        checks = []
        c_skip, c_out, _ = adm_reference().consistency_scalings(T)
        for batch in cm64["batches"]:
            p = TorchProblem(torch, cm, None, [3, 64, 64], batch, cm64_function(torch, cm, batch))
            # The same function on both sides: mapga's f and VJP on its own inputs, recomputed
            # by PyTorch.
            note(f"checking cm64 b{batch}: mapga against PyTorch on the same inputs")
            v = w("values", "cm64", batch)
            z = torch.tensor(v["z"]).reshape(v["shape"])
            cot = torch.tensor(v["v"]).reshape(v["shape"])
            q = TorchProblem(torch, cm, None, [3, 64, 64], batch, p.f)
            q.z, q.v = z, cot
            f_t, g_t = q.forward(), q.vjp()
            f_m = torch.tensor(v["f"]).reshape(v["shape"])
            g_m = torch.tensor(v["g"]).reshape(v["shape"])
            checks.append({"batch": batch,
                           "f_rel_err": float((f_m - f_t).norm() / f_t.norm()),
                           "vjp_rel_err": float((g_m - g_t).norm() / g_t.norm()),
                           "f_std": float(f_t.std()), "vjp_std": float(g_t.std()),
                           "raw_out_std": float(((f_t - c_skip * z) / c_out).std())})
            del q, z, cot, f_t, g_t, f_m, g_m, v
            fwd_flop = 2 * cm64_macs(torch, cm, batch)
            time_ops(p, "cm64", "cm64", "-", f"cm64 3x64x64 b{batch}", batch,
                     (("fwd", 1), ("vjp", 2)), fwd_flop)
            del p
        cm64["checks"] = checks
        results["cm64_checks"] = checks
        del cm
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
    if cm64 is not None:
        say(f"(cm64: the ImageNet-64 consistency model, {cm64['params']:,} parameters in "
            f"{cm64['tensors']} tensors, seeded random weights, class {CM64_LABEL}, t = {T}; "
            f"its FLOPs also count the attention projections and T x T products)")
        for c in cm64["checks"]:
            say(f"cm64 b{c['batch']}: mapga against PyTorch on the same inputs: f relative "
                f"error {c['f_rel_err']:.1e}, VJP relative error {c['vjp_rel_err']:.1e} "
                f"(std of F {c['raw_out_std']:.2f}, of f {c['f_std']:.2f}, of the VJP "
                f"{c['vjp_std']:.2f})")
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
        if cm64 is not None:
            for batch in cm64["batches"]:
                note(f"memory cm64 b{batch}")
                t = torch_memory(cm64["safetensors"], batch, args.threads, "cm64")
                m = mapga_memory(worker_exe, cm64["safetensors"], batch, args.threads, "cm64")
                label = f"cm64 3x64x64 b{batch} vjp"
                ratio = m["delta_kb"] / t["delta_kb"] if t["delta_kb"] else float("nan")
                mem.append({"case": label, "torch": t, "mapga": m, "ratio": ratio})
                say(f"{label:<28} {t['delta_kb'] / 1024:>10.1f} {m['delta_kb'] / 1024:>10.1f} "
                    f"{ratio:>10.2f}x")
        say(f"(method: torch {mem[0]['torch']['method']}, mapga {mem[0]['mapga']['method']})"
            if mem else "")
        results["memory"] = mem

    if cm64 is not None and "load" not in args.skip:
        load_times(args, worker_exe, cm64, results)

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


def load_times(args, worker_exe: Path, cm64: dict, results: dict) -> None:
    """cm64: each file loaded by each side in a fresh process, `args.load_reps` times,
    alternating; the load call's own wall time (the files are in the page cache: they were
    just written)."""
    runs = {(side, fmt): [] for side in ("torch", "mapga") for fmt in ("pt", "safetensors")}
    for rep in range(args.load_reps):
        for fmt in ("pt", "safetensors"):
            path = cm64[fmt]
            sides = ("torch", "mapga") if rep % 2 == 0 else ("mapga", "torch")
            for side in sides:
                note(f"load cm64 {fmt} {side} ({rep + 1}/{args.load_reps})")
                if side == "torch":
                    runs[(side, fmt)].append(torch_load_time(path, args.threads))
                else:
                    runs[(side, fmt)].append(mapga_load_time(worker_exe, path, args.threads))

    def med(side, fmt, key):
        return statistics.median(r[key] for r in runs[(side, fmt)])

    say("")
    say(f"loading the cm64 checkpoint ({cm64['params']:,} parameters; .pt {cm64['pt_bytes'] / 2**20:.0f} MiB "
        f"with 2 flat storages, .safetensors {cm64['safetensors_bytes'] / 2**20:.0f} MiB; a fresh "
        f"process per load, files in the page cache; medians of {args.load_reps}):")
    head = (f"{'file':<13} {'torch read':>11} {'+load_state_dict':>17} {'torch total':>12} "
            f"{'mapga load_as':>14} {'mapga/torch':>11}")
    say(head)
    say("-" * len(head))
    load = {"reps": args.load_reps, "runs": {f"{s}_{f}": r for (s, f), r in runs.items()}}
    for fmt in ("pt", "safetensors"):
        read = med("torch", fmt, "read_ms")
        lsd = med("torch", fmt, "load_state_dict_ms")
        total = med("torch", fmt, "read_and_load_state_dict_ms")
        m = med("mapga", fmt, "load_ms")
        load[fmt] = {"torch_read_ms": read, "torch_load_state_dict_ms": lsd,
                     "torch_ms": total, "torch_build_ms": med("torch", fmt, "build_ms"),
                     "mapga_ms": m, "ratio": m / total}
        say(f"{'.' + fmt:<13} {read:>9.0f} ms {lsd:>14.0f} ms {total:>9.0f} ms "
            f"{m:>11.0f} ms {m / total:>10.2f}x")
    say(f"(torch: `torch.load(map_location='cpu', weights_only=True)` / "
        f"`safetensors.torch.load_file`, then `load_state_dict` into the reference module "
        f"built on the meta device and materialised with `to_empty` "
        f"({load['pt']['torch_build_ms']:.0f} ms, not counted); mapga: the "
        f"`Network::load_as(path, Some(Consistency), F32, Cpu)` call, which also builds the "
        f"network. Target: mapga < 3 s from safetensors)")
    results["load"] = load


def finish(rows, results: dict) -> None:
    ratios = [r["ratio"] for r in rows if r["op"] in ("vjp", "iter")]
    results["worst_ratio"] = max(ratios) if ratios else float("nan")
    say("")


if __name__ == "__main__":
    main()
