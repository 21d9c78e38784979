#!/usr/bin/env bash
# The README's main job: set-up if needed, Fashion-MNIST (Debian's dataset-fashion-mnist) to HDF5,
# the domain FID network once (ddpm_fid_net, cached in the demo dir), then
# `mpirun -np 2 ddpm_train --preset fmnist-demo` for a bounded number of steps with a sample grid
# and a FID (domain extractor) every 250 steps. Run it again to continue an interrupted run
# (--resume auto); DDPM_DEMO_FRESH=1 starts over. Extra arguments go to ddpm_train.
#   DDPM_DEMO_DIR    where data and the run go (default: runs/ in the repository)
#   DDPM_DEMO_NP     ranks (default 2)        DDPM_DEMO_STEPS   optimizer steps (default 1000)
#   DDPM_DEMO_FID=0  no FID                   DDPM_DEMO_FID_SAMPLES / _SAMPLING  (default 1000 / 25)
#   DDPM_DEMO_SETUP=0  skip launch/setup.sh (build/bin/ddpm_train and ddpm_prepare must exist)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ "${DDPM_DEMO_SETUP:-1}" != 0 ]; then "$DDPM_ROOT/launch/setup.sh"; fi

DEMO_DIR="${DDPM_DEMO_DIR:-$DDPM_ROOT/runs}"
NP="${DDPM_DEMO_NP:-2}"
STEPS="${DDPM_DEMO_STEPS:-1000}"
DATA="$DEMO_DIR/fmnist-train.h5"
TEST="$DEMO_DIR/fmnist-test.h5"
NET="$DEMO_DIR/fmnist_net.pt"
FID_SAMPLES="${DDPM_DEMO_FID_SAMPLES:-1000}"
FID_SAMPLING="${DDPM_DEMO_FID_SAMPLING:-25}"
RUN="$DEMO_DIR/fmnist-demo"
BIN="$DDPM_BUILD_DIR/bin"
mkdir -p "$DEMO_DIR"

if [ ! -f "$DATA" ]; then
  echo "[demo] converting Fashion-MNIST (60,000 images, 28x28) to $DATA"
  "$BIN/ddpm_prepare" /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz -o "$DATA" \
    --preview "$DEMO_DIR/fmnist-train-preview.png" -q
fi
FID_ARGS=()
if [ "${DDPM_DEMO_FID:-1}" != 0 ]; then
  if [ ! -f "$TEST" ]; then
    "$BIN/ddpm_prepare" /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz -o "$TEST" -q
  fi
  if [ ! -f "$NET" ]; then
    # The domain FID extractor: a small classifier, 3 epochs (~90% test accuracy), trained once.
    echo "[demo] training the FID feature network (ddpm_fid_net, 3 epochs) -> $NET"
    "$BIN/ddpm_fid_net" --data "$DATA" --test "$TEST" --out "$NET" --epochs 3 --batch-size 128 --lr 3e-3 --seed 0
  fi
  # Reference statistics of the training set are computed once into $DEMO_DIR/fid_stats.h5.
  FID_ARGS=(--fid-every 250 --fid-samples "$FID_SAMPLES" --fid-sampling "$FID_SAMPLING" --fid-extractor "domain:$NET")
fi
if [ "${DDPM_DEMO_FRESH:-0}" = 1 ]; then rm -rf "$RUN"; fi

echo "[demo] training: mpirun -np $NP ddpm_train --preset fmnist-demo --max-steps $STEPS (run dir $RUN)"
start=$SECONDS
set +e
mpirun -np "$NP" --oversubscribe "$BIN/ddpm_train" --preset fmnist-demo --data "$DATA" --run-dir "$RUN" \
  --max-steps "$STEPS" --sample-every 250 "${FID_ARGS[@]}" "$@"
status=$?
set -e
elapsed=$((SECONDS - start))
if [ "$status" = 75 ]; then
  echo "[demo] stopped by a signal after a checkpoint; run ./launch/demo.sh again to continue"
  exit 75
fi
[ "$status" = 0 ] || { echo "[demo] ddpm_train failed (exit status $status)" >&2; exit "$status"; }

grid="$(ls -1 "$RUN"/samples/step_*.png 2>/dev/null | tail -n 1)"
echo
echo "[demo] done in ${elapsed} s with $NP ranks"
echo "[demo] run dir      $RUN"
echo "[demo] sample grid  $grid   (all grids: $RUN/samples/)"
echo "[demo] log          $RUN/log.jsonl   (one JSON object per logged step)"
if [ ${#FID_ARGS[@]} -gt 0 ]; then
  echo "[demo] FID          $(grep '"event":"fid"' "$RUN/log.jsonl" | tail -n 1)"
fi
echo "[demo] checkpoints  $RUN/checkpoints/   (model.pt and ema_*.pt load with torch.load)"
