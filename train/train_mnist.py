#!/usr/bin/env python3
"""Train mapga's MNIST models from a seed, in one command, and export them.

    python train/train_mnist.py --seed 0            # everything: about 90 min on 2 CPU cores
    python train/train_mnist.py --stage cm          # one stage (needs the earlier ones' output)
    python train/train_mnist.py --device cuda       # the same on a GPU

Stages, in order (each writes a checkpoint under `train/runs/<stage>/` every few hundred steps
and resumes from it when rerun, RNG state included, so an interrupted run ends with the same
weights as an uninterrupted one on the same machine):

1. `classifier`: the digit classifier on the TRAIN split (for evaluation only).
2. `denoiser`: the EDM denoiser D (ALGORITHMS.md 3.1-3.2): ln(sigma) ~ N(-1.2, 1.2^2), loss
   weight (sigma^2 + sd^2) / (sigma sd)^2, Adam with warm-up and a linear decay to 0 over the
   last 30% of the steps (the final weights are shipped).
3. `cm`: the consistency model f by consistency distillation from D (ALGORITHMS.md 4.1-4.3):
   student initialised from D, one Heun step of the teacher on an N-point Karras grid, L2
   distance, target EMA mu = 0.95, learning rate decayed to 0 over the last 30%, evaluation EMA
   (0.999 with a warm-up) shipped.
4. `export`: safetensors + RON model cards in `models/mnist/`, and the parity fixtures
   (`tests/fixtures/parity/*.safetensors`: inputs and float64 reference outputs) that
   `tests/parity.rs` compares the Rust forward against.

Not in `all`: `cm2`, consistency distillation with the improvements of the later
consistency-training literature (issue #19), from the SHIPPED denoiser
(`models/mnist/denoiser.safetensors`), exported as a candidate to `train/runs/cm2/export/`:

- the pseudo-Huber distance sqrt(|a - b|^2 + c^2) - c, c = 0.00054 sqrt(d) (Song & Dhariwal,
  "Improved Techniques for Training Consistency Models", ICLR 2024, section 3.3), instead of L2;
- the lognormal choice of the grid interval (ibid., section 3.5: P(t_n) proportional to
  erf((ln t_{n+1} - P_mean) / (sqrt 2 P_std)) - erf((ln t_n - P_mean) / (sqrt 2 P_std)),
  P_mean = -1.1, P_std = 2.0) and the weight lambda(t_n) = 1 / (t_{n+1} - t_n) (ibid. 3.4);
- a finer teacher grid (N = 40 Heun steps) and a longer run with a slower evaluation EMA.

Teacher, grid, Heun step, consistency parameterisation and target EMA are those of `cm`
(ALGORITHMS.md 4.1-4.3), so the two runs differ only in those choices.

Only the TRAIN split (data/README.md) is used; the TEST split is never seen here.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mapga_train.classifier import Classifier  # noqa: E402
from mapga_train.data import REPO, test_split, train_split  # noqa: E402
from mapga_train.export import save_fixture, save_weights, write_card  # noqa: E402
from mapga_train.precond import (  # noqa: E402
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    consistency,
    denoise,
    heun_step,
    karras,
)
from mapga_train.unet import UNet, UNetConfig  # noqa: E402

RUNS = REPO / "train" / "runs"
FIXTURES = REPO / "tests" / "fixtures" / "parity"
STAGES = ["classifier", "denoiser", "cm", "export"]

#: The shipped architecture (both networks): small enough for CPU training and CPU MAP-GA.
CONFIG = UNetConfig(in_channels=1, channels=16, channel_mult=[1, 2, 4], num_res_blocks=1)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage", choices=["all", "denoiser", "cm", "classifier", "export", "cm2"],
                   default="all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--denoiser-steps", type=int, default=2000)
    p.add_argument("--denoiser-lr", type=float, default=2e-3)
    p.add_argument("--cm-steps", type=int, default=600)
    p.add_argument("--cm-lr", type=float, default=4e-4)
    p.add_argument("--cm-grid", type=int, default=18, help="N, the Karras grid of distillation")
    p.add_argument("--cm2-steps", type=int, default=2000)
    p.add_argument("--cm2-lr", type=float, default=4e-4)
    p.add_argument("--cm2-grid", type=int, default=40, help="N of the improved distillation")
    p.add_argument("--cm2-ema", type=float, default=0.9995, help="evaluation EMA of cm2")
    p.add_argument("--classifier-epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", type=Path, default=REPO / "models" / "mnist")
    p.add_argument("--runs", type=Path, default=RUNS, help="checkpoints and train.log")
    p.add_argument("--fixtures", type=Path, default=FIXTURES, help="parity fixtures")
    return p.parse_args()


def log(stage: str, msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {stage}: {msg}"
    print(line, flush=True)
    with open(RUNS / "train.log", "a") as f:
        f.write(line + "\n")


class Checkpointed:
    """A training loop's state (modules, optimiser, RNG, step) saved and resumed as one file."""

    def __init__(self, stage: str, every: int = 250) -> None:
        self.path = RUNS / stage / "checkpoint.pt"
        self.every = every

    def load(self, state: dict) -> int:
        if not self.path.exists():
            return 0
        saved = torch.load(self.path, weights_only=False)
        for key, obj in state.items():
            obj.load_state_dict(saved[key])
        torch.set_rng_state(saved["rng"])
        return saved["step"]

    def save(self, state: dict, step: int, force: bool = False) -> None:
        if step % self.every and not force:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        saved = {key: obj.state_dict() for key, obj in state.items()}
        saved["rng"] = torch.get_rng_state()
        saved["step"] = step
        tmp = self.path.with_suffix(".tmp")
        torch.save(saved, tmp)
        tmp.replace(self.path)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), net.parameters()):
        e.lerp_(p, 1.0 - decay)


def batches(x: torch.Tensor, batch: int, seed: int, skip: int = 0):
    """Endless shuffled minibatch indices from their own generator, so the order does not depend
    on the other random draws; `skip` replays the first batches of a resumed run."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0] - batch + 1, batch):
            if skip:
                skip -= 1
                continue
            yield perm[i:i + batch]


def learning_rate(base: float, step: int, total: int, warmup: int = 200) -> float:
    """Linear warm-up over `warmup` steps, constant, then a linear decay to 0 over the last 30%
    of the steps (so the last weights are already averaged out; no EMA needed)."""
    return base * min(1.0, step / warmup) * min(1.0, (total - step + 1) / (0.3 * total))


def train_denoiser(args, x: torch.Tensor, dev) -> UNet:
    net = UNet(CONFIG).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=args.denoiser_lr)
    ckpt = Checkpointed("denoiser")
    state = {"net": net, "opt": opt}
    start = ckpt.load(state)
    if start:
        log("denoiser", f"resumed at step {start}")
    order = batches(x, args.batch, args.seed, skip=start)
    t0, running = time.time(), 0.0
    for step in range(start + 1, args.denoiser_steps + 1):
        idx = next(order)
        y = x[idx].to(dev)
        sigma = (torch.randn(y.shape[0], dtype=torch.float64) * 1.2 - 1.2).exp().to(dev)
        noisy = y + torch.randn_like(y) * sigma.to(y.dtype).view(-1, 1, 1, 1)
        weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
        loss = (weight.to(y.dtype).view(-1, 1, 1, 1) * (denoise(net, noisy, sigma) - y) ** 2).mean()
        for g in opt.param_groups:
            g["lr"] = learning_rate(args.denoiser_lr, step, args.denoiser_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if step % 100 == 0:
            log("denoiser", f"step {step}/{args.denoiser_steps} loss {running / 100:.4f} "
                f"({time.time() - t0:.0f} s)")
            running = 0.0
        ckpt.save(state, step, force=step == args.denoiser_steps)
    return net.eval()


def interval_weights(grid: torch.Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """iCT's lognormal probabilities of the intervals (grid[n], grid[n + 1]) of an ascending grid."""
    cdf = torch.erf((grid.log() - p_mean) / (2.0**0.5 * p_std))
    w = (cdf[1:] - cdf[:-1]).clamp_min(0.0)
    return w / w.sum()


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(|a - b|^2 + c^2) - c per item of a batch."""
    return ((a - b).flatten(1).pow(2).sum(1) + c * c).sqrt() - c


def shipped_denoiser(dev) -> UNet:
    """The shipped EDM denoiser (`models/mnist/denoiser.safetensors`), the teacher of cm2."""
    from safetensors.torch import load_file

    net = UNet(CONFIG)
    state = load_file(str(REPO / "models" / "mnist" / "denoiser.safetensors"))
    net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return net.to(dev).eval()


def distill(args, x: torch.Tensor, teacher: UNet, dev, *, stage: str, steps: int, lr: float,
            grid_n: int, eval_ema: float, order_seed: int, improved: bool) -> UNet:
    """Consistency distillation (ALGORITHMS.md 4.1-4.3), the loop of both `cm` and `cm2`: the
    student starts as the teacher; each step takes a grid interval (t_n, t_{n+1}), noises a
    batch to t_{n+1}, runs one Heun step of the teacher to t_n and pulls the student at t_{n+1}
    towards the target network at t_n; target EMA 0.95, evaluation EMA `eval_ema` with a
    warm-up (shipped). `improved` (cm2) draws intervals lognormally and uses the weighted
    pseudo-Huber distance; otherwise intervals are uniform and the distance is L2."""
    teacher = teacher.requires_grad_(False).eval()
    student = copy.deepcopy(teacher).requires_grad_(True)
    target = copy.deepcopy(teacher)
    ema = copy.deepcopy(teacher)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    ckpt = Checkpointed(stage)
    state = {"student": student, "target": target, "ema": ema, "opt": opt}
    start = ckpt.load(state)
    if start:
        log(stage, f"resumed at step {start}")
    # t_1 = eps < ... < t_N = T (ALGORITHMS.md 4.2), as a float64 tensor.
    grid = karras(grid_n, SIGMA_MIN, SIGMA_MAX).flip(0).to(dev)
    probs = interval_weights(grid)
    c = 0.00054 * float(x[0].numel()) ** 0.5
    order = batches(x, args.batch, args.seed + order_seed, skip=start)
    t0, running = time.time(), 0.0
    for step in range(start + 1, steps + 1):
        idx = next(order)
        y = x[idx].to(dev)
        if improved:
            n = torch.multinomial(probs, y.shape[0], replacement=True).to(dev)
        else:
            n = torch.randint(0, grid_n - 1, (y.shape[0],)).to(dev)
        t_cur, t_next = grid[n], grid[n + 1]
        noisy = y + torch.randn_like(y) * t_next.to(y.dtype).view(-1, 1, 1, 1)
        with torch.no_grad():
            x_hat = heun_step(teacher, noisy, t_next, t_cur)
            want = consistency(target, x_hat, t_cur)
        got = consistency(student, noisy, t_next)
        if improved:
            weight = (1.0 / (t_next - t_cur)).to(y.dtype)
            loss = (weight * pseudo_huber(got, want, c)).mean()
        else:
            loss = ((got - want) ** 2).mean()
        for g in opt.param_groups:
            g["lr"] = learning_rate(lr, step, steps, warmup=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(target, student, 0.95)
        # Evaluation EMA with a warm-up, so the initial weights fade out within a few steps.
        ema_update(ema, student, min(eval_ema, (1 + step) / (10 + step)))
        running += loss.item()
        if step % 100 == 0:
            log(stage, f"step {step}/{steps} loss {running / 100:.6f} ({time.time() - t0:.0f} s)")
            running = 0.0
        ckpt.save(state, step, force=step == steps)
    return ema


def train_cm(args, x: torch.Tensor, teacher: UNet, dev) -> UNet:
    """The shipped consistency model: uniform intervals of an N-point grid, L2."""
    return distill(args, x, teacher, dev, stage="cm", steps=args.cm_steps, lr=args.cm_lr,
                   grid_n=args.cm_grid, eval_ema=0.999, order_seed=1, improved=False)


def train_cm2(args, x: torch.Tensor, teacher: UNet, dev) -> UNet:
    """Improved consistency distillation (module doc, `cm2`)."""
    return distill(args, x, teacher, dev, stage="cm2", steps=args.cm2_steps, lr=args.cm2_lr,
                   grid_n=args.cm2_grid, eval_ema=args.cm2_ema, order_seed=2, improved=True)


def export_cm2(args, cm: UNet) -> Path:
    """The cm2 candidate as `cm.safetensors` + `cm.ron` in `train/runs/cm2/export/`."""
    out = RUNS / "cm2" / "export"
    sha = save_weights(cm, out / "cm.safetensors")
    write_card(out / "cm.ron", {
        "name": "mnist-consistency-cm2", "kind": "Consistency", "architecture": "unet",
        "image_shape": (1, 28, 28), "value_range": (-1.0, 1.0), "sigma_data": SIGMA_DATA,
        "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "hyperparameters": CONFIG.hyperparameters(),
        "provenance": (f"train/train_mnist.py --stage cm2 --seed {args.seed} at commit {git_commit()}; "
                       f"TRAIN split of data/mnist (9,000 digits); consistency distillation from "
                       f"models/mnist/denoiser.safetensors, Heun teacher on a {args.cm2_grid}-point "
                       f"Karras grid, pseudo-Huber distance, lognormal intervals and 1/dt weights "
                       f"(Song & Dhariwal 2024), target EMA 0.95, {args.cm2_steps} Adam steps of batch "
                       f"{args.batch}, lr {args.cm2_lr} (linear decay over the last 30%), "
                       f"EMA {args.cm2_ema} with warm-up"),
        "weights_sha256": sha,
    })
    return out


def train_classifier(args, x: torch.Tensor, labels: torch.Tensor, dev) -> Classifier:
    net = Classifier().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    per_epoch = x.shape[0] // args.batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.classifier_epochs * per_epoch)
    order = batches(x, args.batch, args.seed + 2)
    for epoch in range(args.classifier_epochs):
        total, correct = 0.0, 0
        for _ in range(per_epoch):
            idx = next(order)
            xb, yb = x[idx].to(dev), labels[idx].to(dev)
            # Small random shifts (up to 2 px): the classifier must not depend on exact centring.
            dx, dy = torch.randint(-2, 3, (2,)).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            correct += (logits.argmax(1) == yb).sum().item()
        log("classifier", f"epoch {epoch + 1}: loss {total / per_epoch:.4f}, "
            f"train accuracy {correct / (per_epoch * args.batch):.4f}")
    return net.eval()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def export(args, denoiser: UNet, cm: UNet, classifier: Classifier) -> None:
    out = args.out
    provenance = (f"train/train_mnist.py --seed {args.seed} at commit {git_commit()}; "
                  f"TRAIN split of data/mnist (9,000 digits)")
    common = {
        "architecture": "unet",
        "image_shape": (1, 28, 28),
        "value_range": (-1.0, 1.0),
        "sigma_data": SIGMA_DATA,
        "sigma_min": SIGMA_MIN,
        "sigma_max": SIGMA_MAX,
        "hyperparameters": CONFIG.hyperparameters(),
    }
    sha = save_weights(denoiser, out / "denoiser.safetensors")
    write_card(out / "denoiser.ron", {
        "name": "mnist-edm-denoiser", "kind": "Denoiser", **common,
        "provenance": provenance + f"; EDM loss, {args.denoiser_steps} Adam steps of batch "
                      f"{args.batch}, lr {args.denoiser_lr} (warm-up, linear decay over the last 30%)",
        "weights_sha256": sha,
    })
    sha = save_weights(cm, out / "cm.safetensors")
    write_card(out / "cm.ron", {
        "name": "mnist-consistency", "kind": "Consistency", **common,
        "provenance": provenance + f"; consistency distillation from mnist-edm-denoiser, "
                      f"Heun teacher on a {args.cm_grid}-point Karras grid, L2, target EMA 0.95, "
                      f"{args.cm_steps} Adam steps of batch {args.batch}, lr {args.cm_lr} "
                      f"(linear decay over the last 30%), EMA 0.999 with warm-up",
        "weights_sha256": sha,
    })
    sha = save_weights(classifier, out / "classifier.safetensors")
    write_card(out / "classifier.ron", {
        "name": "mnist-classifier", "kind": "Classifier", "architecture": "mnist_cnn",
        "image_shape": (1, 28, 28), "value_range": (-1.0, 1.0),
        "provenance": provenance + f"; cross-entropy, {args.classifier_epochs} epochs, "
                      f"shifts of up to 2 px",
        "weights_sha256": sha,
    })
    write_parity_fixtures(denoiser, cm, classifier)
    log("export", f"wrote {out} and tests/fixtures/parity/")


def write_parity_fixtures(denoiser: UNet, cm: UNet, classifier: Classifier) -> None:
    """Inputs and float64 reference outputs of the shipped networks, for tests/parity.rs."""
    fixtures = FIXTURES
    gen = torch.Generator().manual_seed(1234)
    x_test, _, _ = test_split()
    clean = x_test[:2].to(torch.float64)
    sigmas = [0.002, 0.05, 0.5, 2.0, 80.0]
    for name, net, fn in (("denoiser", denoiser, denoise), ("cm", cm, consistency)):
        net64 = copy.deepcopy(net).to("cpu", torch.float64).eval()
        tensors = {"sigmas": torch.tensor(sigmas, dtype=torch.float64)}
        with torch.no_grad():
            for i, s in enumerate(sigmas):
                x = clean + s * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
                tensors[f"input_{i}"] = x
                tensors[f"output_{i}"] = fn(net64, x, s)
        save_fixture(tensors, fixtures / f"{name}.safetensors")
    net64 = copy.deepcopy(classifier).to("cpu", torch.float64).eval()
    with torch.no_grad():
        save_fixture({"input": x_test[:8].to(torch.float64),
                      "logits": net64(x_test[:8].to(torch.float64)),
                      "features": net64.features(x_test[:8].to(torch.float64))},
                     fixtures / "classifier.safetensors")


def main() -> None:
    args = parse_args()
    global RUNS, FIXTURES
    RUNS, FIXTURES = args.runs, args.fixtures
    RUNS.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    dev = torch.device(args.device)
    x, labels = train_split()
    log("setup", f"seed {args.seed}, device {dev}, {x.shape[0]} TRAIN digits, "
        f"{sum(p.numel() for p in UNet(CONFIG).parameters()):,} U-Net parameters, "
        f"args {json.dumps({k: str(v) for k, v in vars(args).items()})}")
    stages = STAGES if args.stage == "all" else [args.stage]
    nets: dict[str, torch.nn.Module] = {}

    def need(stage: str) -> torch.nn.Module:
        """The result of an earlier stage: from this run, or from its final checkpoint."""
        if stage in nets:
            return nets[stage]
        ckpt = RUNS / stage / ("checkpoint.pt" if stage != "classifier" else "classifier.pt")
        if not ckpt.exists():
            sys.exit(f"error: stage `{stage}` has not run yet ({ckpt} is missing)")
        saved = torch.load(ckpt, weights_only=False)
        net = Classifier() if stage == "classifier" else UNet(CONFIG)
        shipped = {"denoiser": "net", "cm": "ema"}  # which weights of the checkpoint ship
        net.load_state_dict(saved[shipped[stage]] if stage != "classifier" else saved)
        return net.to(dev).eval()

    for stage in stages:
        # Each stage's own seed, whether it runs alone or in the whole pipeline.
        torch.manual_seed(1000 * args.seed + (STAGES + ["cm2"]).index(stage))
        t0 = time.time()
        if stage == "denoiser":
            nets["denoiser"] = train_denoiser(args, x, dev)
        elif stage == "cm":
            nets["cm"] = train_cm(args, x, need("denoiser"), dev)
        elif stage == "cm2":
            out = export_cm2(args, train_cm2(args, x, shipped_denoiser(dev), dev).cpu())
            log("cm2", f"exported the candidate to {out}")
        elif stage == "classifier":
            nets["classifier"] = train_classifier(args, x, labels, dev)
            (RUNS / "classifier").mkdir(parents=True, exist_ok=True)
            torch.save(nets["classifier"].state_dict(), RUNS / "classifier" / "classifier.pt")
        else:
            export(args, need("denoiser").cpu(), need("cm").cpu(), need("classifier").cpu())
        log(stage, f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
