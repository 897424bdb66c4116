#!/usr/bin/env bash
# README's Pi install and the recogniser's test-split evaluation, run in the userland that
# 64-bit Raspberry Pi OS Bookworm is built on (Debian Bookworm, arm64) under qemu-user
# emulation on an x86 host, then compared clip by clip with the same evaluation on the host.
#
# It checks what a Pi runs, short of its CPU: `.ci/setup`'s apt packages and wheels for
# aarch64, the search's C extension built by aarch64 gcc, and ai-edge-litert's aarch64
# kernels, whose int8 arithmetic may round differently from x86's (the confidence bar was
# fitted on x86). Emulation is many times slower than a Pi, so it measures no speed.
#
#   sudo bash tools/emulated_pi.sh OUT_DIR     (root: debootstrap, chroot and mounts)
#
# Needs debootstrap and qemu-user-static with binfmt_misc (on Debian: apt-get install
# debootstrap qemu-user-static binfmt-support). It installs the committed tree (a clone of
# HEAD), as README's "Install on a Pi" does. Settings from the environment:
# - SUITE: bookworm (default), or trixie, which Raspberry Pi OS Trixie is built on (Python
#   3.13);
# - ROOT: the userland, kept between runs (default /var/tmp/assistant-arm64-SUITE);
# - DATA: the shared data (default ../shared/data), mounted read-only at /opt/shared/data;
# - CPU: the processor qemu emulates, cortex-a72 (default: Raspberry Pi 4, Pi 400, CM4;
#   no int8 dot-product instructions) or cortex-a76 (Raspberry Pi 5, which has them), so
#   that ai-edge-litert picks the kernels such a Pi would;
# - LIMIT: clips per set (default 0: all); EVAL=0 skips the evaluation;
# - TESTS: pytest arguments to run there as well, with the tests' extras (EXTRAS=dev), e.g.
#   "tests/test_recognizer.py tests/test_cli.py"; none by default;
# - PYTHON: runs the host's side (default .venv/bin/python).
# OUT_DIR gets log.txt, what each side answered (arm64.jsonl, x86.jsonl), their metrics and
# comparison.json (tools.compare_answers).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:?usage: tools/emulated_pi.sh OUT_DIR}")
SUITE=${SUITE:-bookworm}
ROOT=${ROOT:-/var/tmp/assistant-arm64-$SUITE}
DATA=$(realpath "${DATA:-../shared/data}")
CPU=${CPU:-cortex-a72}
LIMIT=${LIMIT:-0}
EVAL=${EVAL:-1}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

stamp() { echo "[$(date +%T)] $*"; }

if [ ! -x "$ROOT/usr/bin/python3" ]; then
    stamp "debootstrap: Debian $SUITE arm64 into $ROOT"
    debootstrap --arch=arm64 --variant=minbase --include=python3,ca-certificates \
        "$SUITE" "$ROOT" http://deb.debian.org/debian
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# pip reaches PyPI through the host's certificate bundle, as the host's pip does.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/host-ca.crt"
# No service starts inside the chroot (mosquitto's package would start one).
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"

rm -rf "$ROOT/opt/assistant"
git clone --quiet "$PWD" "$ROOT/opt/assistant"
stamp "installing commit $(git -C "$ROOT/opt/assistant" rev-parse --short HEAD)"

mounts=()
bind() {  # bind SOURCE TARGET [ro]
    if [ -d "$1" ]; then mkdir -p "$2"; fi
    mount --bind "$1" "$2"
    mounts=("$2" "${mounts[@]}")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}
cleanup() { for m in "${mounts[@]}"; do umount "$m" || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mount -t proc proc "$ROOT/proc" && mounts=("$ROOT/proc" "${mounts[@]}")
# XNNPACK's cpuinfo reads the processor list from /sys and each processor from
# /proc/cpuinfo, which qemu-user leaves as the host's x86 one: the two disagreed and
# ai-edge-litert crashed (SIGSEGV) loading a graph. So /proc/cpuinfo shows what the emulated
# Pi's would, one entry per processor /sys lists.
bind /sys "$ROOT/sys"
case "$CPU" in
    cortex-a72) part=0xd08 variant=0x0 revision=3 features="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a76) part=0xd0b variant=0x4 revision=1
        features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid"
        features+=" asimdrdm lrcpc dcpop asimddp" ;;
    *) echo "CPU must be cortex-a72 or cortex-a76, not $CPU" >&2; exit 2 ;;
esac
for ((i = 0; i < $(nproc --all); i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\n' "$i" "$features"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\n' "$variant"
    printf 'CPU part\t: %s\nCPU revision\t: %s\n\n' "$part" "$revision"
done > "$OUT/cpuinfo"
bind "$OUT/cpuinfo" "$ROOT/proc/cpuinfo"
bind /dev "$ROOT/dev"
bind /dev/pts "$ROOT/dev/pts"
bind "$DATA" "$ROOT/opt/shared/data" ro
bind "$OUT" "$ROOT/out"

in_arm64() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 QEMU_CPU="$CPU" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/ssl/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        bash -euo pipefail -c "cd /opt/assistant && $1"
}

stamp "arm64 ($CPU): $(in_arm64 'uname -m; python3 --version' | tr '\n' ' ')"
stamp "arm64: README's first command"
SECONDS=0
in_arm64 'EXTRAS= bash .ci/setup'
stamp "arm64: .ci/setup took ${SECONDS} s"
in_arm64 '.venv/bin/assistant run --source models/home/demo.wav'
in_arm64 '.venv/bin/pip freeze' > "$OUT/arm64-packages.txt"

if [ "$EVAL" = 1 ] || [ -n "${TESTS:-}" ]; then
    # tools.evaluate's own needs beyond the daemon's (some tests import it as well).
    in_arm64 '.venv/bin/pip install -q scipy tqdm'
fi
if [ "$EVAL" = 1 ]; then
    stamp "arm64: tools.evaluate --split test (emulated: slow)"
    SECONDS=0
    in_arm64 ".venv/bin/python -m tools.evaluate --model models/home --split test \
        --data /opt/shared/data --limit $LIMIT --out /out/arm64-metrics.json \
        --answers /out/arm64.jsonl"
    stamp "arm64: evaluation took ${SECONDS} s"
    stamp "x86: the same evaluation on this host ($("$PYTHON" -c 'import platform; print(platform.machine())'))"
    "$PYTHON" -m tools.evaluate --model models/home --split test --data "$DATA" \
        --limit "$LIMIT" --out "$OUT/x86-metrics.json" --answers "$OUT/x86.jsonl"
    stamp "x86 against arm64, clip by clip"
    "$PYTHON" -m tools.compare_answers "$OUT/x86.jsonl" "$OUT/arm64.jsonl" \
        --out "$OUT/comparison.json"
fi
if [ -n "${TESTS:-}" ]; then
    in_arm64 'EXTRAS=dev bash .ci/setup'
    stamp "arm64: pytest $TESTS (emulated: slow)"
    SECONDS=0
    in_arm64 ".venv/bin/python -m pytest -q -p no:cacheprovider $TESTS"
    stamp "arm64: tests took ${SECONDS} s"
fi
stamp done
