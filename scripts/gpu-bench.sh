#!/usr/bin/env bash
# The benchmark suite on an NVIDIA GPU through wgpu (Vulkan), beside
# burn-flex on the same machine's CPU, in one go. Writes a Markdown table.
#
#   scripts/gpu-bench.sh [OUT.md] [upsell bench arguments...]
#
# A relative OUT.md is taken from the directory the script is run in. The
# binary: $UPSELL if set (a prebuilt `upsell`, e.g. for a machine without
# network), else `cargo build --release` (the default features include wgpu).
#
# Without an NVIDIA GPU, point VK_DRIVER_FILES at another Vulkan driver,
# e.g. Mesa's lavapipe (/usr/share/vulkan/icd.d/lvp_icd.x86_64.json), to
# check that everything runs; its figures are the CPU's, not a GPU's.
#
# Vulkan: the NVIDIA driver brings the ICD but not always the loader
# (libvulkan.so.1) and the GL dispatch libraries it links against. Where the
# host has no loader, this script unpacks Debian's packages from .gl/ into a
# private directory; fetch them beforehand on a machine with network with
# `scripts/gpu-bench.sh --fetch-loader`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
out=${1:-benches/gpu.md}
dest=$(user_path "${1:-}" "$out")
cd "$(dirname "$0")/.."

if [[ ${1:-} == --fetch-loader ]]; then
    mkdir -p .gl
    # The loader, and the GL dispatch libraries that NVIDIA's Vulkan driver
    # (libGLX_nvidia) links against.
    (cd .gl && apt-get download libvulkan1 libglvnd0 libglx0 libegl1 libopengl0 libgl1 libgles2)
    ls -l .gl
    exit 0
fi

shift || true
work=
loader=
trap 'rm -rf ${work:+"$work"} ${loader:+"$loader"}' EXIT

if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    ls .gl/libvulkan1_*.deb >/dev/null 2>&1 || { echo "error: no Vulkan loader on this host and none in .gl/ (run --fetch-loader where there is network)" >&2; exit 2; }
    loader=$(mktemp -d)
    for deb in .gl/*.deb; do
        dpkg-deb -x "$deb" "$loader"
    done
    export LD_LIBRARY_PATH="$loader/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "using the Vulkan loader and GL dispatch libraries from .gl/" >&2
fi
if [[ -z ${VK_DRIVER_FILES:-} ]]; then
    for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
        /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
        if [[ -f $icd ]]; then
            export VK_DRIVER_FILES=$icd
            break
        fi
    done
fi

upsell=$(upsell_bin)
if gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1) && [[ -n $gpu ]]; then
    gpu="${gpu%%,*} (driver ${gpu##*, })"
else
    # No NVIDIA GPU: name the Vulkan driver, e.g. Mesa's software one
    # (lavapipe) that proves the script works on a machine without a GPU.
    gpu="no NVIDIA GPU; Vulkan driver ${VK_DRIVER_FILES:-as the Vulkan loader finds it}"
fi
machine="$gpu through wgpu/Vulkan; CPU: $(cpu_cores); $(date -u +%Y-%m-%d)"
work=$(mktemp -d)

"$upsell" bench --backend wgpu,flex --work "$work" "$@" | tee "$work/bench.jsonl"
reference=$(python3 scripts/numpy-matmul.py 2>/dev/null || true)
mkdir -p "$(dirname "$dest")"
{
    echo "# upsell bench on a GPU"
    echo
    # With $UPSELL set the command line says so, without the binary's path.
    echo "\`${UPSELL:+UPSELL=<prebuilt upsell> }scripts/gpu-bench.sh $out $*\`"
    echo
    python3 scripts/bench-table.py "$machine" "$reference" <"$work/bench.jsonl"
} >"$dest.tmp"
mv "$dest.tmp" "$dest"
echo "wrote $out" >&2
