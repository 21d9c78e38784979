#!/usr/bin/env bash
# Sets up a machine for ddpm and builds it: Debian packages, the pinned PyPI torch wheel in a venv
# outside the repository, then a Release build into build/. Idempotent: a second run only checks
# and rebuilds what changed (seconds). Options: --no-build (dependencies only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

say()  { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'fail "step failed at line $LINENO (see the output above)"' ERR

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) fail "unknown option '$arg' (known: --no-build)" ;;
  esac
done

# --- Debian packages -------------------------------------------------------------------------
# slurmctld slurmd slurm-client munge: tests/launch/slurm_test.py starts its own private Slurm
# (own config, ports, munge key and socket in a temporary folder). On a systemd machine the
# packages' own services stay inactive without /etc/slurm/slurm.conf; munge's may start.
DEBS=(build-essential cmake ninja-build ccache pkg-config python3 python3-venv
      openmpi-bin libopenmpi-dev libhdf5-dev prometheus-cpp-dev prometheus prometheus-pushgateway
      dataset-fashion-mnist libgtest-dev libcli11-dev nlohmann-json3-dev libpng-dev zlib1g-dev
      libjpeg62-turbo-dev libssl-dev slurmctld slurmd slurm-client munge)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq || fail "apt-get update failed: check the network or the apt sources"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
fi

# --- torch venv ------------------------------------------------------------------------------
PY="$DDPM_VENV/bin/python3"
want="$DDPM_TORCH_VERSION"
have="$("$PY" -c 'import torch, numpy, h5py, PIL, scipy, pytorch_fid; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
  say "installing torch==$want (+ numpy, h5py, pillow, scipy, pytorch-fid, cmake) into $DDPM_VENV; the CUDA wheel is ~3 GB, first time only"
  [ -x "$PY" ] || python3 -m venv "$DDPM_VENV" || fail "python3 -m venv $DDPM_VENV failed (install python3-venv)"
  "$PY" -m pip install -q --upgrade pip >/dev/null
  "$PY" -m pip install -q "torch==$want" numpy h5py pillow scipy pytorch-fid "cmake>=3.31" \
    || fail "pip install torch==$want failed; set DDPM_TORCH_VERSION to a version PyPI has"
fi

[ "$build" = 1 ] || { say "dependencies ready (build skipped)"; exit 0; }

# --- configure and build ---------------------------------------------------------------------
CMAKE="$DDPM_VENV/bin/cmake"
mkdir -p "$DDPM_BUILD_DIR"
if [ ! -f "$DDPM_BUILD_DIR/build.ninja" ]; then
  say "configuring $DDPM_BUILD_DIR (Release)"
  "$CMAKE" -S "$DDPM_ROOT" -B "$DDPM_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DDDPM_PYTHON="$PY" ${DDPM_CMAKE_ARGS:-} > "$DDPM_BUILD_DIR/configure.log" 2>&1 \
    || { cat "$DDPM_BUILD_DIR/configure.log" >&2; rm -f "$DDPM_BUILD_DIR/build.ninja";
         fail "cmake configure failed (log above)"; }
fi
say "building with $(nproc) jobs (a file that includes torch takes ~30 s to compile the first time)"
if ! "$CMAKE" --build "$DDPM_BUILD_DIR" -j"$(nproc)" 2>&1 | { grep -v '^ninja: no work to do' || true; }; then
  fail "build failed (compiler errors above)"
fi
say "ready: binaries in $DDPM_BUILD_DIR/bin"
