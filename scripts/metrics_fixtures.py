#!/usr/bin/env python3
"""Regenerate tests/fixtures/metrics/: image pairs and scikit-image's metric values for them.

Run from anywhere: `python3 scripts/metrics_fixtures.py`. It makes a virtual environment under
/tmp (reused if present), installs scikit-image and numpy there, writes deterministic image
pairs in [-1, 1] as float64 `.npy` files of shape [C, H, W], and writes expected.json with
the values `tests/metrics.rs` compares against (1e-6 relative). The Rust tests need no Python.

SSIM is skimage's structural_similarity(x, ref, data_range=2, channel_axis=0,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False); PSNR is
peak_signal_noise_ratio(ref, x, data_range=2) (null in the JSON for identical images, where
it is infinite); MSE is mean_squared_error(x, ref).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

VENV = Path("/tmp/mapga-metrics-venv")
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "metrics"


def ensure_venv():
    """Re-run this script inside a venv that has scikit-image and numpy."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "scikit-image", "numpy"], check=True
    )
    os.execv(str(python), [str(python), __file__])


def smooth(rng, shape):
    """A smooth image in [-1, 1]: a few random sinusoids per channel."""
    import numpy as np

    c, h, w = shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.zeros(shape)
    for ch in range(c):
        for _ in range(3):
            fy, fx = rng.uniform(0.05, 0.4, size=2)
            phase = rng.uniform(0, 2 * np.pi)
            img[ch] += np.sin(fy * yy + fx * xx + phase)
    return np.clip(img / 3.0, -1.0, 1.0)


def main():
    ensure_venv()
    import numpy as np
    import skimage
    from skimage.metrics import (
        mean_squared_error,
        peak_signal_noise_ratio,
        structural_similarity,
    )

    # (name, shape [C, H, W], noise standard deviation, seed)
    cases = [
        ("grey28_low", (1, 28, 28), 0.02, 1),
        ("grey28_high", (1, 28, 28), 0.5, 2),
        ("colour17x23", (3, 17, 23), 0.1, 3),
        ("colour32x40", (3, 32, 40), 0.3, 4),
        ("grey11_min", (1, 11, 11), 0.2, 5),
        ("grey13x30_random", (1, 13, 30), None, 6),
        ("identical", (1, 16, 16), 0.0, 7),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    expected = []
    for name, shape, noise, seed in cases:
        rng = np.random.default_rng(seed)
        if noise is None:
            # Two unrelated uniform images.
            ref = rng.uniform(-1, 1, size=shape)
            x = rng.uniform(-1, 1, size=shape)
        else:
            ref = smooth(rng, shape)
            x = np.clip(ref + noise * rng.standard_normal(shape), -1.0, 1.0)
        ref = ref.astype(np.float64)
        x = x.astype(np.float64)
        np.save(OUT / f"{name}_x.npy", x)
        np.save(OUT / f"{name}_ref.npy", ref)
        mse = float(mean_squared_error(x, ref))
        psnr = None if mse == 0 else float(peak_signal_noise_ratio(ref, x, data_range=2))
        ssim = float(
            structural_similarity(
                x,
                ref,
                data_range=2,
                channel_axis=0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
        )
        expected.append(
            {
                "name": name,
                "x": f"{name}_x.npy",
                "reference": f"{name}_ref.npy",
                "shape": list(shape),
                "mse": mse,
                "psnr": psnr,
                "ssim": ssim,
            }
        )
    doc = {
        "generator": "scripts/metrics_fixtures.py",
        "scikit_image": skimage.__version__,
        "numpy": np.__version__,
        "cases": expected,
    }
    (OUT / "expected.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {len(expected)} cases to {OUT}")


if __name__ == "__main__":
    main()
