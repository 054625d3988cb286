#!/usr/bin/env bash
# Builds `mapga --features cuda` on a machine with no GPU and no system CUDA toolkit (#21).
#
#   scripts/build_cuda.sh            # install the toolkit once into .cuda/, then build
#   scripts/build_cuda.sh --install-only
#
# The CUDA 13.0 toolkit comes from NVIDIA's wheels on PyPI (nvcc, cicc/ptxas, headers, and the
# libraries the link names), unpacked into .cuda/ (gitignored; ~1.2 GB; a second run reuses it).
# CUDA 13.0 because the lent GPU machines run driver 580 (CUDA 13.0): a newer nvcc writes PTX
# that driver cannot JIT, and 13.x's sonames (libcublas.so.13, ...) are the ones installed there.
# The driver's libcuda.so is replaced at link time by a stub built here from cuda.h (every cu*
# entry point returns CUDA_ERROR_NO_DEVICE); it is never used at run time on a GPU machine.
#
# Environment (all optional):
#   CUDA_COMPUTE_CAP   target compute capability (default 90: H100/H200; cudaforge turns 90
#                      into the arch-specific sm_90a/compute_90a)
#   MAPGA_CUDA_DIR     where the toolkit goes (default <repo>/.cuda)
#   CARGO_TARGET_DIR   where the build goes (default <repo>/target/cuda, apart from the CPU build)
#   PYTHON             the python with pip that downloads the wheels (default python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cuda_dir="${MAPGA_CUDA_DIR:-$repo/.cuda}"
python="${PYTHON:-python3}"
compute_cap="${CUDA_COMPUTE_CAP:-90}"
target_dir="${CARGO_TARGET_DIR:-$repo/target/cuda}"
install_only=0
case "${1:-}" in
    "") ;;
    --install-only) install_only=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build_cuda.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

die() { echo "build_cuda.sh: $*" >&2; exit 1; }

# The toolkit: one version set. Change one and the next run reinstalls.
wheels=(
    nvidia-cuda-nvcc==13.0.88      # nvcc, ptxas, fatbinary, nvlink
    nvidia-nvvm==13.0.88           # cicc, libdevice
    nvidia-cuda-crt==13.0.88       # include/crt
    nvidia-cuda-cccl==13.0.85      # include/cccl (cuda::std, cub, thrust)
    nvidia-cuda-runtime==13.0.96   # cuda.h, cuda_runtime.h, cuda_fp16/bf16/fp8.h, libcudart.so.13
    nvidia-cuda-nvrtc==13.0.88     # libnvrtc.so.13
    nvidia-curand==10.4.0.35       # libcurand.so.10, curand headers
    nvidia-cublas==13.0.0.19       # libcublas.so.13, libcublasLt.so.13
)
stamp_text="${wheels[*]}"
root="$cuda_dir/nvidia/cu13" # the wheels' common prefix: bin/, nvvm/, include/, lib/

start=$SECONDS

install_toolkit() {
    command -v "$python" >/dev/null 2>&1 || die "'$python' not found (set PYTHON to a python3 with pip)"
    "$python" -m pip --version >/dev/null 2>&1 || die "'$python -m pip' does not work (install pip)"
    command -v cc >/dev/null 2>&1 || die "no C compiler 'cc' (needed for the libcuda stub and by nvcc)"
    echo "== installing the CUDA toolkit wheels into $cuda_dir"
    rm -rf "$cuda_dir/nvidia" "$cuda_dir/.installed"
    mkdir -p "$cuda_dir/wheels"
    local specs=("${wheels[@]}")
    "$python" -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
        -d "$cuda_dir/wheels" "${specs[@]}" ||
        die "pip could not download the CUDA wheels (needs PyPI)"
    local spec name ver file
    for spec in "${specs[@]}"; do
        name="${spec%%==*}"; ver="${spec##*==}"
        file=$(ls "$cuda_dir/wheels/${name//-/_}-$ver-"*.whl 2>/dev/null | head -n1)
        [ -n "$file" ] || die "no wheel for $spec in $cuda_dir/wheels"
        # zipfile.extract drops the modes: set them back (nvcc, ptxas, cicc are executables).
        "$python" - "$file" "$cuda_dir" <<'PY' || die "could not unpack $file"
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        if info.filename.startswith("nvidia/"):
            path = z.extract(info, sys.argv[2])
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(path, mode)
PY
    done
    rm -rf "$cuda_dir/wheels" # 1.3 GB; pip's own cache keeps them for a reinstall
    [ -x "$root/bin/nvcc" ] || die "nvcc missing after unpacking ($root/bin/nvcc)"

    # The link names (-lcudart, -lcublas, ...): the wheels ship only the sonames.
    local lib
    for lib in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
        [ -e "$root/lib/lib$lib" ] || die "missing $root/lib/lib$lib"
        ln -sfn "lib$lib" "$root/lib/lib${lib%.so.*}.so"
    done

    # The driver API stub: one function per cu* name in cuda.h (the real names and the _v2/_v3
    # names its macros map them to), each returning CUDA_ERROR_NO_DEVICE (100). soname
    # libcuda.so.1, as the driver's, so the binary asks for the real one at run time.
    mkdir -p "$root/lib/stubs"
    {
        echo '/* Generated by scripts/build_cuda.sh from cuda.h: a link stub, not a driver. */'
        grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' "$root/include/cuda.h" | sort -u |
            sed 's/.*/int &(void) { return 100; }/'
    } >"$root/lib/stubs/libcuda_stub.c"
    cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" \
        "$root/lib/stubs/libcuda_stub.c" || die "could not build the libcuda stub"
    ln -sfn libcuda.so "$root/lib/stubs/libcuda.so.1"

    echo "$stamp_text" >"$cuda_dir/.installed"
}

if [ -f "$cuda_dir/.installed" ] && [ "$(cat "$cuda_dir/.installed")" = "$stamp_text" ] &&
    [ -x "$root/bin/nvcc" ]; then
    echo "== CUDA toolkit already installed in $cuda_dir (reused)"
else
    install_toolkit
fi

"$root/bin/nvcc" --version >/dev/null 2>&1 || die "$root/bin/nvcc does not run"
cuda_version=$("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
echo "== CUDA toolkit $cuda_version ($root)"
if [ "$install_only" = 1 ]; then
    echo "== installed in $((SECONDS - start)) s"
    exit 0
fi

command -v cargo >/dev/null 2>&1 || die "cargo is required (install Rust with rustup)"

# cudarc's build reads CUDA_HOME/CUDA_PATH/CUDA_ROOT/CUDA_TOOLKIT_ROOT_DIR (link search: lib/,
# lib/stubs/) and runs `nvcc --version` from the PATH for the CUDA version; candle-kernels'
# cudaforge finds nvcc through NVCC and reads CUDA_COMPUTE_CAP (no nvidia-smi here).
export CUDA_HOME="$root" CUDA_PATH="$root" CUDA_ROOT="$root" CUDA_TOOLKIT_ROOT_DIR="$root"
export NVCC="$root/bin/nvcc" PATH="$root/bin:$PATH" CUDA_COMPUTE_CAP="$compute_cap"
export CARGO_TARGET_DIR="$target_dir"
# cudaforge compiles candle's .cu files on half the cores by default; they are the build's
# critical path (candle-core waits for them), so give them all.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"

echo "== cargo build --release --locked --features cuda (compute capability $compute_cap, into $target_dir)"
build_start=$SECONDS
(cd "$repo" && cargo build --release --locked --features cuda) || die "the CUDA build failed"
build_s=$((SECONDS - build_start))

bin="$target_dir/release/mapga"
[ -x "$bin" ] || die "no binary at $bin"
# What the PTX embedded in the binary targets (cudaforge's -gencode for CUDA_COMPUTE_CAP).
ptx_target=$(grep -a -o -m1 -E '^\.target sm_[0-9]+[a-z]?' "$bin" | head -n1 | cut -d' ' -f2 || true)

# It loads: run it against the libcuda stub (any cu* call answers CUDA_ERROR_NO_DEVICE).
LD_LIBRARY_PATH="$root/lib:$root/lib/stubs" "$bin" --version >/dev/null ||
    die "$bin does not start (against $root/lib and the libcuda stub)"

echo
echo "== built $bin ($(du -h "$bin" | cut -f1))"
echo "   CUDA version:        $cuda_version"
echo "   compute capability:  $compute_cap (PTX .target ${ptx_target:-?}, JIT-compiled by the driver at load)"
echo "   cargo build:         ${build_s} s; whole script $((SECONDS - start)) s"
echo "   shared libraries it loads at run time (ldd against $root/lib):"
LD_LIBRARY_PATH="$root/lib" ldd "$bin" | awk '/=>/ {print $1, $3}' | while read -r lib path; do
    case "$lib" in
        libcuda.so.1) echo "     $lib  (the NVIDIA driver's, on the GPU machine; here only a link stub)" ;;
        *) case "$path" in
               "$root"/*) echo "     $lib  $(du -hL "$path" | cut -f1)  (CUDA 13.x: the GPU machine's LD_LIBRARY_PATH must find it)" ;;
               *) echo "     $lib  (system: $path)" ;;
           esac ;;
    esac
done
