#!/usr/bin/env bash
# README's Pi install and the recogniser's test-split evaluation, run in the userland that
# Raspberry Pi OS is built on (Debian arm64 for the 64-bit OS, armhf for the 32-bit one)
# under qemu-user emulation on an x86 host, then compared clip by clip with the same
# evaluation on the host.
#
# It checks what a Pi runs, short of its CPU: `.ci/setup`'s apt packages and wheels for the
# Pi's architecture, the search's C extension built by its gcc, and its TFLite runtime's
# kernels (ai-edge-litert on arm64, tflite-runtime on armhf), whose int8 arithmetic may round
# differently from x86's (the confidence bar was fitted on x86). Emulation is many times
# slower than a Pi, so it measures no speed.
#
#   sudo bash tools/emulated_pi.sh OUT_DIR     (root: debootstrap, chroot and mounts)
#
# Needs debootstrap and qemu-user-static with binfmt_misc (on Debian: apt-get install
# debootstrap qemu-user-static binfmt-support). It installs the committed tree (a clone of
# HEAD), as README's "Install on a Pi" does. Settings from the environment:
# - ARCH: arm64 (default: 64-bit Pi OS) or armhf (32-bit Pi OS; Bookworm only, as
#   tflite-runtime has no wheels past Python 3.11);
# - SUITE: bookworm (default), or trixie, which Raspberry Pi OS Trixie is built on (Python
#   3.13);
# - ROOT: the userland, kept between runs (default /var/tmp/assistant-ARCH-SUITE);
# - DATA: the shared data (default ../shared/data), mounted read-only at /opt/shared/data;
# - CPU: the Pi's processor, so that the runtime picks the kernels such a Pi would:
#   cortex-a53 (Pi 3, Zero 2 W; armhf only), cortex-a72 (default: Pi 4, Pi 400, CM4; no
#   int8 dot-product instructions) or cortex-a76 (Pi 5, which has them). On arm64 qemu
#   emulates that core; qemu-arm (32-bit) knows no ARMv8 core by name, so on armhf it runs
#   its "max" ARMv8 processor and /proc/cpuinfo names the core;
# - LIMIT: clips per set (default 0: all); EVAL=0 skips the evaluation;
# - TESTS: pytest arguments to run there as well, with the tests' extras (EXTRAS=dev), e.g.
#   "tests/test_recognizer.py tests/test_cli.py"; none by default;
# - PYTHON: runs the host's side (default .venv/bin/python).
# OUT_DIR gets log.txt, what each side answered (ARCH.jsonl, x86.jsonl), their metrics and
# comparison.json (tools.compare_answers).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:?usage: tools/emulated_pi.sh OUT_DIR}")
ARCH=${ARCH:-arm64}
SUITE=${SUITE:-bookworm}
ROOT=${ROOT:-/var/tmp/assistant-$ARCH-$SUITE}
DATA=$(realpath "${DATA:-../shared/data}")
CPU=${CPU:-cortex-a72}
LIMIT=${LIMIT:-0}
EVAL=${EVAL:-1}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

stamp() { echo "[$(date +%T)] $*"; }

if [ ! -x "$ROOT/usr/bin/python3" ]; then
    stamp "debootstrap: Debian $SUITE $ARCH into $ROOT"
    debootstrap --arch="$ARCH" --variant=minbase --include=python3,ca-certificates \
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
case "$ARCH/$CPU" in
    arm64/cortex-a72) part=0xd08 variant=0x0 revision=3 features="fp asimd evtstrm crc32 cpuid" ;;
    arm64/cortex-a76) part=0xd0b variant=0x4 revision=1
        features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid"
        features+=" asimdrdm lrcpc dcpop asimddp" ;;
    # As a 64-bit kernel shows them to a 32-bit process (the 32-bit OS on a Pi 3, 4 or 5).
    armhf/cortex-a53) part=0xd03 variant=0x0 revision=4 ;;
    armhf/cortex-a72) part=0xd08 variant=0x0 revision=3 ;;
    armhf/cortex-a76) part=0xd0b variant=0x4 revision=1 ;;
    *) echo "no CPU $CPU for ARCH $ARCH (see the settings above)" >&2; exit 2 ;;
esac
qemu_cpu=$CPU
if [ "$ARCH" = armhf ]; then
    qemu_cpu=max
    features="half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32"
fi
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

in_pi() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 QEMU_CPU="$qemu_cpu" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/ssl/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        bash -euo pipefail -c "cd /opt/assistant && $1"
}

stamp "$ARCH ($CPU): $(in_pi 'uname -m; python3 --version' | tr '\n' ' ')"
stamp "$ARCH: README's first command"
SECONDS=0
in_pi 'EXTRAS= bash .ci/setup'
stamp "$ARCH: .ci/setup took ${SECONDS} s"
in_pi '.venv/bin/assistant run --source models/home/demo.wav'
in_pi '.venv/bin/pip freeze' > "$OUT/$ARCH-packages.txt"

if [ "$EVAL" = 1 ] || [ -n "${TESTS:-}" ]; then
    # tools.evaluate's own needs beyond the daemon's (some tests import it as well). scipy
    # (only for --against) has no 32-bit ARM wheels, and its build would take hours there.
    in_pi ".venv/bin/pip install -q tqdm $([ "$ARCH" = armhf ] || echo scipy)"
fi
if [ "$EVAL" = 1 ]; then
    stamp "$ARCH: tools.evaluate --split test (emulated: slow)"
    SECONDS=0
    in_pi ".venv/bin/python -m tools.evaluate --model models/home --split test \
        --data /opt/shared/data --limit $LIMIT --out /out/$ARCH-metrics.json \
        --answers /out/$ARCH.jsonl"
    stamp "$ARCH: evaluation took ${SECONDS} s"
    stamp "x86: the same evaluation on this host ($("$PYTHON" -c 'import platform; print(platform.machine())'))"
    "$PYTHON" -m tools.evaluate --model models/home --split test --data "$DATA" \
        --limit "$LIMIT" --out "$OUT/x86-metrics.json" --answers "$OUT/x86.jsonl"
    stamp "x86 against $ARCH, clip by clip"
    "$PYTHON" -m tools.compare_answers "$OUT/x86.jsonl" "$OUT/$ARCH.jsonl" \
        --out "$OUT/comparison.json"
fi
if [ -n "${TESTS:-}" ]; then
    in_pi 'EXTRAS=dev bash .ci/setup'
    stamp "$ARCH: pytest $TESTS (emulated: slow)"
    SECONDS=0
    in_pi ".venv/bin/python -m pytest -q -p no:cacheprovider $TESTS"
    stamp "$ARCH: tests took ${SECONDS} s"
fi
stamp done
