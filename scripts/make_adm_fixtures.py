#!/usr/bin/env python3
"""Regenerate tests/fixtures/adm/: tiny random-weight ADM / consistency-model U-Nets, their
reference outputs and gradients, extra checkpoint formats, and full-size key lists.

Run from anywhere: `python3 scripts/make_adm_fixtures.py`. If the current interpreter lacks
torch, numpy or safetensors, it makes a virtual environment under /tmp/mapga-adm-venv (reused
if present), installs `torch==2.15.0 numpy safetensors` there and re-runs itself inside it.

The network is `scripts/adm_reference.py` (an independent PyTorch module with the official
state_dict names). Weights are drawn from numpy's default_rng with fixed seeds and stored as
float32; the reference values are computed from those float32 weights cast to float64, in
float64, on one CPU thread. See tests/fixtures/adm/README.md for the file list and the exact
definitions. The Rust tests need no Python.
"""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

# One thread and Intel MKL's conditional-numerical-reproducibility mode, so that float64 BLAS
# results do not depend on buffer alignment or thread count (set before torch is imported).
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

VENV = Path("/tmp/mapga-adm-venv")
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "adm"
TORCH_VERSION = "2.15.0"


def ensure_deps():
    """Re-run this script inside a venv with torch/numpy/safetensors if they are missing here."""
    if all(importlib.util.find_spec(m) is not None for m in ("torch", "numpy", "safetensors")):
        return
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        sys.exit("torch/numpy/safetensors still missing inside " + str(VENV))
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import torch, numpy, safetensors"], capture_output=True
    )
    if probe.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"torch=={TORCH_VERSION}", "numpy",
             "safetensors"],
            check=True,
        )
    os.execv(str(python), [str(python), __file__] + sys.argv[1:])


# ---------------------------------------------------------------------------------------------
# Variants

BASE = dict(image_size=16, in_channels=3, model_channels=32, num_res_blocks=1)
BATCH = 2
LABELS = [3, 7]
KARRAS_SIGMAS = [0.7, 20.0]  # raw time input 250 ln(sigma): one negative, one positive
VP_RAW_TIMES = [10.0, 517.25]
VP_SIGMAS = [0.05, 3.0]
WEIGHT_FILE_BUDGET = 2 * 1024 * 1024


def variant_table(cm_mult):
    """name -> (network hyperparameters, preconditioning, weight seed)."""
    cm_cond = dict(
        BASE, out_channels=3, attention_ds=[2], channel_mult=cm_mult, num_classes=10,
        num_heads=4, num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True,
        conv_resample=True, qkv_order="flash", attention_conv_dims=2,
    )
    cm_uncond = dict(
        cm_cond, channel_mult=(1, 1), num_classes=None, use_scale_shift_norm=False,
    )
    adm = dict(
        BASE, out_channels=6, attention_ds=[2], channel_mult=(1, 1), num_classes=None,
        num_heads=4, num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True,
        conv_resample=True, qkv_order="legacy", attention_conv_dims=1,
    )
    # Without scale-shift the embedding is added per channel before a GroupNorm; with 32 groups
    # and 32 channels every group is one channel and the norm removes it exactly, so a net whose
    # blocks all have 32 channels ignores its time input and labels (true of cm_uncond). This
    # variant therefore gets a 64-channel level, and num_res_blocks 0 keeps it under 2 MB: its
    # only 64-channel ResBlock is output_blocks.0.0, where time and labels do act.
    adm_resample = dict(
        adm, resblock_updown=False, num_heads=2, num_head_channels=-1,
        use_scale_shift_norm=False, num_classes=10, channel_mult=(1, 2), num_res_blocks=0,
    )
    return OrderedDict(
        cm_cond=(cm_cond, "consistency", 101),
        cm_uncond=(cm_uncond, "consistency", 102),
        edm_cond=(dict(cm_cond), "edm", 103),
        adm=(adm, "vp_epsilon", 104),
        adm_resample=(adm_resample, "vp_epsilon", 105),
    )


def randomize(model, seed):
    """Overwrite every parameter with seeded random values that keep activations O(1):
    conv/linear weights N(0, 1/fan_in), their biases N(0, 0.2^2), GroupNorm weight 1 + N(0, 0.3^2)
    and bias N(0, 0.2^2), the class embedding N(0, 0.5^2). Values are drawn in float64 by
    numpy in state_dict order and rounded to float32."""
    import numpy as np
    import torch
    import torch.nn as nn

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _, mod in model.named_modules():
            for pname, p in mod.named_parameters(recurse=False):
                shape = tuple(p.shape)
                z = rng.standard_normal(shape)
                if isinstance(mod, nn.GroupNorm):
                    v = 1.0 + 0.3 * z if pname == "weight" else 0.2 * z
                elif isinstance(mod, nn.Embedding):
                    v = 0.5 * z
                elif pname == "weight":
                    v = z / math.sqrt(int(np.prod(shape[1:])))
                else:
                    v = 0.2 * z
                p.copy_(torch.from_numpy(v).to(p.dtype))


def build(cfg):
    import adm_reference as R

    return R.UNet(**cfg)


def weights_of(cfg, seed):
    """Random float32 state dict (an OrderedDict with torch's `_metadata`, as model.state_dict()
    returns it)."""
    import torch

    net = build(cfg)
    randomize(net, seed)
    sd = net.state_dict()
    for k in list(sd.keys()):
        sd[k] = sd[k].detach().clone().contiguous().to(torch.float32)
    return sd


# ---------------------------------------------------------------------------------------------
# Reference values


def reference_values(cfg, kind, sd, sigmas, raw_times):
    """All tensors of a `<v>.ref.safetensors`, computed in float64 from the weights `sd`."""
    import numpy as np
    import torch

    import adm_reference as R

    # the stored values (float32, or float16 for the half file) widened exactly to float64
    net = build(cfg).double().eval()
    net.load_state_dict({k: v.to(torch.float64) for k, v in sd.items()}, strict=True)

    rng = np.random.default_rng(7)
    cout = cfg["out_channels"]
    hw = cfg["image_size"]
    x = torch.from_numpy(rng.standard_normal((BATCH, cfg["in_channels"], hw, hw)))
    labels = (
        torch.tensor(LABELS, dtype=torch.int64) if cfg["num_classes"] is not None else None
    )
    timesteps = torch.tensor(raw_times, dtype=torch.float64)
    vals = OrderedDict()
    vals["x"] = x
    if labels is not None:
        vals["labels"] = labels
    vals["timesteps"] = timesteps

    xr = x.clone().requires_grad_(True)
    raw = net(xr, timesteps, labels)
    cot = torch.from_numpy(rng.standard_normal((BATCH, cout, hw, hw)))
    (vjp,) = torch.autograd.grad(raw, xr, cot)
    vals["raw_out"] = raw.detach()
    vals["raw_cotangent"] = cot
    vals["raw_vjp"] = vjp

    vals["sigmas"] = torch.tensor(sigmas, dtype=torch.float64)
    coeffs = []
    for k, sigma in enumerate(sigmas):
        coeffs.append(list(R.precondition_coefficients(kind, sigma)))
        xp = x.clone().requires_grad_(True)
        d = R.denoise(net, kind, xp, sigma, labels, image_channels=3)
        cot = torch.from_numpy(rng.standard_normal(tuple(d.shape)))
        (vjp,) = torch.autograd.grad(d, xp, cot)
        vals[f"pre_out_{k}"] = d.detach()
        vals[f"pre_cotangent_{k}"] = cot
        vals[f"pre_vjp_{k}"] = vjp
    # rows: (c_skip, c_out, c_in, network time input) per sigma
    vals["pre_coefficients"] = torch.tensor(coeffs, dtype=torch.float64)
    return vals


def time_effect(cfg, sd):
    """max |F(x, t) - F(x, t')| over the output, for two unrelated time pairs: zero (rounding)
    when the network ignores its time input."""
    import torch

    net = build(cfg).double().eval()
    net.load_state_dict({k: v.to(torch.float64) for k, v in sd.items()}, strict=True)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(BATCH, cfg["in_channels"], cfg["image_size"], cfg["image_size"],
                    generator=g, dtype=torch.float64)
    y = torch.tensor(LABELS) if cfg["num_classes"] is not None else None
    with torch.no_grad():
        a = net(x, torch.tensor([1.0, 500.0], dtype=torch.float64), y)
        b = net(x, torch.tensor([300.0, 20.0], dtype=torch.float64), y)
    return float((a - b).abs().max())


def save_safetensors(tensors, path, metadata=None):
    """At most one metadata entry: safetensors writes the metadata map in hash order, so two
    or more entries would make the bytes differ from run to run."""
    from safetensors.torch import save_file

    assert metadata is None or len(metadata) <= 1

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


# ---------------------------------------------------------------------------------------------
# diffusers export (UNet2DModel layout, keys renamed as diffusers' conversion script does)


def levels_with_attention(cfg):
    return [(2**lvl) in set(cfg["attention_ds"]) for lvl in range(len(cfg["channel_mult"]))]


def diffusers_config(cfg):
    attn = levels_with_attention(cfg)
    n = len(attn)
    assert cfg["num_head_channels"] > 0 and cfg["resblock_updown"]
    return OrderedDict(
        _class_name="UNet2DModel",
        _diffusers_version="0.42.1",
        act_fn="silu",
        add_attention=True,
        attention_head_dim=cfg["num_head_channels"],
        attn_norm_num_groups=32,
        block_out_channels=[m * cfg["model_channels"] for m in cfg["channel_mult"]],
        center_input_sample=False,
        class_embed_type=None,
        down_block_types=[
            "AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attn
        ],
        downsample_padding=1,
        downsample_type="resnet",
        dropout=0.0,
        flip_sin_to_cos=True,
        freq_shift=0,
        in_channels=cfg["in_channels"],
        layers_per_block=cfg["num_res_blocks"],
        mid_block_scale_factor=1,
        mid_block_type="UNetMidBlock2D",
        norm_eps=1e-05,
        norm_num_groups=32,
        num_class_embeds=cfg["num_classes"],
        num_train_timesteps=None,
        out_channels=cfg["out_channels"],
        resnet_time_scale_shift="scale_shift" if cfg["use_scale_shift_norm"] else "default",
        sample_size=cfg["image_size"],
        time_embedding_dim=None,
        time_embedding_type="positional",
        up_block_types=[
            "AttnUpBlock2D" if attn[n - 1 - i] else "ResnetUpsampleBlock2D" for i in range(n)
        ],
        upsample_type="resnet",
    )


def to_flash_order(w, heads):
    """Rows (heads, three, d) -> (three, heads, d) for a qkv weight or bias."""
    rest = w.shape[1:]
    d = w.shape[0] // (3 * heads)
    return w.reshape(heads, 3, d, *rest).transpose(0, 1).reshape(w.shape[0], *rest)


def to_diffusers_state_dict(cfg, sd):
    import torch

    out = OrderedDict()

    def res(src, dst):
        for a, b in (
            ("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
            ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"),
        ):
            for s in ("weight", "bias"):
                key = f"{src}.{a}.{s}"
                if key in sd:
                    out[f"{dst}.{b}.{s}"] = sd[key]

    def attn(src, dst, channels):
        heads = channels // cfg["num_head_channels"] if cfg["num_head_channels"] > 0 else cfg["num_heads"]
        for s in ("weight", "bias"):
            out[f"{dst}.group_norm.{s}"] = sd[f"{src}.norm.{s}"]
            qkv = sd[f"{src}.qkv.{s}"]
            if cfg["qkv_order"] == "legacy":
                qkv = to_flash_order(qkv, heads)
            q, k, v = qkv.reshape(3 * channels, -1).squeeze(-1).chunk(3, dim=0)
            out[f"{dst}.to_q.{s}"] = q.contiguous()
            out[f"{dst}.to_k.{s}"] = k.contiguous()
            out[f"{dst}.to_v.{s}"] = v.contiguous()
            out[f"{dst}.to_out.0.{s}"] = sd[f"{src}.proj_out.{s}"].reshape(channels, -1).squeeze(-1).contiguous()

    for s in ("weight", "bias"):
        out[f"time_embedding.linear_1.{s}"] = sd[f"time_embed.0.{s}"]
        out[f"time_embedding.linear_2.{s}"] = sd[f"time_embed.2.{s}"]
    if cfg["num_classes"] is not None:
        out["class_embedding.weight"] = sd["label_emb.weight"]
    for s in ("weight", "bias"):
        out[f"conv_in.{s}"] = sd[f"input_blocks.0.0.{s}"]

    attn_lv = levels_with_attention(cfg)
    mc, mults, nrb = cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"]
    cur = 1
    for i, m in enumerate(mults):
        for j in range(nrb):
            res(f"input_blocks.{cur}.0", f"down_blocks.{i}.resnets.{j}")
            if attn_lv[i]:
                attn(f"input_blocks.{cur}.1", f"down_blocks.{i}.attentions.{j}", m * mc)
            cur += 1
        if i != len(mults) - 1:
            res(f"input_blocks.{cur}.0", f"down_blocks.{i}.downsamplers.0")
            cur += 1
    mid_ch = mults[-1] * mc
    res("middle_block.0", "mid_block.resnets.0")
    attn("middle_block.1", "mid_block.attentions.0", mid_ch)
    res("middle_block.2", "mid_block.resnets.1")
    cur = 0
    n = len(mults)
    for i in range(n):
        lvl = n - 1 - i
        ch = mults[lvl] * mc
        for j in range(nrb + 1):
            res(f"output_blocks.{cur}.0", f"up_blocks.{i}.resnets.{j}")
            if attn_lv[lvl]:
                attn(f"output_blocks.{cur}.1", f"up_blocks.{i}.attentions.{j}", ch)
            cur += 1
        if i != n - 1:
            res(f"output_blocks.{cur - 1}.{2 if attn_lv[lvl] else 1}", f"up_blocks.{i}.upsamplers.0")
    for s in ("weight", "bias"):
        out[f"conv_norm_out.{s}"] = sd[f"out.0.{s}"]
        out[f"conv_out.{s}"] = sd[f"out.2.{s}"]

    n_in = sum(v.numel() for v in sd.values())
    n_out = sum(v.numel() for v in out.values())
    assert n_in == n_out, (n_in, n_out)
    return OrderedDict((k, v.to(torch.float32).contiguous()) for k, v in out.items())


def write_diffusers(cfg, sd, folder):
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "unet").mkdir(parents=True)
    with open(folder / "unet" / "config.json", "w") as f:
        json.dump(diffusers_config(cfg), f, indent=2)
        f.write("\n")
    save_safetensors(
        to_diffusers_state_dict(cfg, sd),
        folder / "unet" / "diffusion_pytorch_model.safetensors",
        metadata={"format": "pt"},
    )


# ---------------------------------------------------------------------------------------------
# .pt variants of cm_cond


def flat_view_state_dict(sd):
    """Every parameter becomes a view into one of two flat float32 storages (ndim <= 1 and the
    rest), the layout OpenAI's fp16 training writes through master_params_to_state_dict."""
    import torch

    out = OrderedDict(sd)
    out._metadata = getattr(sd, "_metadata", None)
    groups = [[k for k, v in sd.items() if v.ndim <= 1], [k for k, v in sd.items() if v.ndim > 1]]
    for names in groups:
        flat = torch.cat([sd[k].reshape(-1) for k in names])
        off = 0
        for k in names:
            n = sd[k].numel()
            out[k] = flat[off : off + n].view(sd[k].shape)
            off += n
    return out


def count_storages(path):
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and "model" in loaded:
        loaded = loaded["model"]
    return len({v.untyped_storage().data_ptr() for v in loaded.values()})


def write_pt_variants(sd, cfg, kind):
    import torch

    torch.save(sd, OUT / "cm_cond.pt")
    torch.save({"model": sd, "step": 3, "note": "x"}, OUT / "cm_cond_nested.pt")

    views_path = OUT / "abcdefghijklmnopqrstu.pt"
    assert len(views_path.stem) == 21
    torch.save(flat_view_state_dict(sd), views_path)
    n = count_storages(views_path)
    assert n == 2, f"{views_path.name} has {n} storages, expected 2"
    assert count_storages(OUT / "cm_cond.pt") == len(sd)

    half = OrderedDict((k, v.to(torch.float16)) for k, v in sd.items())
    half._metadata = getattr(sd, "_metadata", None)
    torch.save(half, OUT / "cm_cond_half.pt")
    vals = reference_values(cfg, kind, half, KARRAS_SIGMAS, [250.0 * math.log(s) for s in KARRAS_SIGMAS])
    save_safetensors(vals, OUT / "cm_cond_half.ref.safetensors",
                     metadata={"description": f"variant cm_cond_half, preconditioning {kind}, "
                               "weights cm_cond_half.pt (float16) widened to float64"})

    # The legacy (pre-1.6, non-zip) format keys storages by their memory address, so the bytes
    # change from run to run: keep an existing file that already holds the same tensor.
    g = torch.Generator().manual_seed(11)
    legacy = {"w": torch.randn(4, generator=g)}
    path = OUT / "legacy_format.pt"
    keep = False
    if path.exists():
        try:
            old = torch.load(path, map_location="cpu", weights_only=True)
            keep = list(old) == ["w"] and torch.equal(old["w"], legacy["w"])
        except Exception:
            keep = False
    if not keep:
        torch.save(legacy, path, _use_new_zipfile_serialization=False)


# ---------------------------------------------------------------------------------------------
# Key lists


def write_key_lists():
    import adm_reference as R

    header = {
        "adm256_uncond": "openai/guided-diffusion 256x256_diffusion_uncond.pt: 256 ch, 2 res blocks, "
        "mult (1,1,2,2,4,4), attention ds {8,16,32}, head channels 64, scale-shift, resblock_updown, "
        "learn_sigma (out 6), unconditional, Conv1d qkv/proj_out",
        "ffhq_10m": "DPS/DiffPIR ffhq_10m.pt (guided-diffusion UNetModel): 128 ch, 1 res block, "
        "mult (1,1,2,2,4,4), attention ds {16}, head channels 64, scale-shift, resblock_updown, "
        "out 6, unconditional, Conv1d qkv/proj_out",
    }
    counts = {}
    for name in ("adm256_uncond", "ffhq_10m"):
        model = R.meta_model(R.FULL_CONFIGS[name])
        params, tensors = R.count(model)
        counts[name] = (params, tensors)
        with open(OUT / f"keys_{name}.txt", "w") as f:
            f.write(
                f"# key\tshape  (scripts/adm_reference.py UNet on device='meta'; {header[name]}; "
                f"{params} params, {tensors} tensors)\n"
            )
            for line in R.key_lines(model):
                f.write(line + "\n")
    # The consistency-model lists are generated facts from the research notes; regenerate them
    # with the reference module and check they agree before copying them.
    shared = Path("/work/shared/checkpoints")
    for name in ("cm_imagenet64", "cm_lsun256"):
        model = R.meta_model(R.FULL_CONFIGS[name])
        counts[name] = R.count(model)
        ours = R.key_lines(model)
        dst = OUT / f"keys_{name}.txt"
        src = shared / f"keys_{name}.txt"
        if src.exists():
            theirs = [l.rstrip("\n") for l in open(src) if not l.startswith("#")]
            assert ours == theirs, f"key list of {name} differs from {src}"
            shutil.copyfile(src, dst)
        else:  # fresh machine without the notes: the committed copy must still agree
            theirs = [l.rstrip("\n") for l in open(dst) if not l.startswith("#")]
            assert ours == theirs, f"key list of {name} differs from {dst}"
    return counts


# ---------------------------------------------------------------------------------------------


def main():
    ensure_deps()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import adm_reference as R

    if not torch.__version__.startswith(TORCH_VERSION):
        print(f"warning: torch {torch.__version__}, fixtures were made with {TORCH_VERSION}",
              file=sys.stderr)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)

    # channel_mult (1, 2) for the CM ImageNet-like variant if its float32 weights fit the budget
    probe = dict(variant_table((1, 2))["cm_cond"][0])
    nbytes = 4 * sum(v.numel() for v in R.UNet(**probe).state_dict().values())
    cm_mult = (1, 2) if nbytes + 64 * 1024 <= WEIGHT_FILE_BUDGET else (1, 1)

    summary = OrderedDict()
    weights = {}
    for name, (cfg, kind, seed) in variant_table(cm_mult).items():
        sd = weights_of(cfg, seed)
        weights[name] = sd
        save_safetensors(sd, OUT / f"{name}.safetensors")
        assert (OUT / f"{name}.safetensors").stat().st_size <= WEIGHT_FILE_BUDGET
        if kind == "vp_epsilon":
            sigmas, raw_times = VP_SIGMAS, VP_RAW_TIMES
        else:
            sigmas = KARRAS_SIGMAS
            raw_times = [250.0 * math.log(s) for s in KARRAS_SIGMAS]
        vals = reference_values(cfg, kind, sd, sigmas, raw_times)
        save_safetensors(vals, OUT / f"{name}.ref.safetensors",
                         metadata={"description": f"variant {name}, preconditioning {kind}"})
        summary[name] = OrderedDict(
            image_size=cfg["image_size"],
            in_channels=cfg["in_channels"],
            model_channels=cfg["model_channels"],
            out_channels=cfg["out_channels"],
            num_res_blocks=cfg["num_res_blocks"],
            attention_ds=sorted(cfg["attention_ds"]),
            channel_mult=list(cfg["channel_mult"]),
            num_classes=cfg["num_classes"],
            num_heads=cfg["num_heads"],
            num_head_channels=cfg["num_head_channels"],
            use_scale_shift_norm=cfg["use_scale_shift_norm"],
            resblock_updown=cfg["resblock_updown"],
            conv_resample=cfg["conv_resample"],
            qkv_order=cfg["qkv_order"],
            attention_conv_dims=cfg["attention_conv_dims"],
            learn_sigma=cfg["out_channels"] == 6,
            preconditioning=kind,
            sigmas=sigmas,
            raw_timesteps=raw_times,
            labels=LABELS if cfg["num_classes"] is not None else None,
            weight_seed=seed,
            output_depends_on_time=time_effect(cfg, sd) > 1e-9,
            parameter_count=sum(v.numel() for v in sd.values()),
            tensor_count=len(sd),
        )

    cfg_cond, kind_cond, _ = variant_table(cm_mult)["cm_cond"]
    write_pt_variants(weights["cm_cond"], cfg_cond, kind_cond)
    for name in ("cm_cond", "cm_uncond"):
        write_diffusers(variant_table(cm_mult)[name][0], weights[name], OUT / f"diffusers_{name}")

    counts = write_key_lists()
    with open(OUT / "variants.json", "w") as f:
        json.dump(
            OrderedDict(
                variants=summary,
                full_size_key_lists=OrderedDict(
                    (k, OrderedDict(parameter_count=p, tensor_count=t)) for k, (p, t) in counts.items()
                ),
            ),
            f,
            indent=2,
        )
        f.write("\n")

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    for name, s in summary.items():
        print(f"{name}: {s['parameter_count']:,} params, {s['tensor_count']} tensors")
    for name, (p, t) in counts.items():
        print(f"{name}: {p:,} params, {t} tensors")
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")
    assert total <= 16 * 1024 * 1024


if __name__ == "__main__":
    main()
