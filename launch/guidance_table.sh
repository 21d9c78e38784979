#!/usr/bin/env bash
# Classifier guidance, measured: for each scale s, ddpm_sample --classifier draws the same seeded
# samples (same labels, same x_T) from a diffusion model guided by a noise classifier, then
# ddpm_eval --fid-npz gives the domain network's accuracy on the requested labels and the domain
# FID against the training set. Prints a markdown table (scale | accuracy | FID | seconds).
#
#   launch/guidance_table.sh MODEL CLASSIFIER OUT_DIR [SCALE ...]      (default scales 0 1 3 10)
#
# MODEL: a diffusion run dir or checkpoint (e.g. runs/fmnist-demo); CLASSIFIER: a run dir or
# checkpoint of ddpm_train_classifier trained on the model's schedule. Environment:
#   DDPM_GUIDE_SAMPLES (1000)  DDPM_GUIDE_NP (2)  DDPM_GUIDE_RESPACING (25: ancestral; ddimN: DDIM)
#   DDPM_GUIDE_BATCH (100)  DDPM_GUIDE_SEED (0)  DDPM_GUIDE_DATA (runs/fmnist-train.h5)
#   DDPM_GUIDE_EXTRACTOR (domain:runs/fmnist_net.pt)  DDPM_GUIDE_STATS (fid_stats.h5 beside the data)
#   DDPM_BUILD_DIR (build)
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
model=$1 classifier=$2 out=$3
shift 3
scales=("$@")
[[ ${#scales[@]} -gt 0 ]] || scales=(0 1 3 10)
bin=${DDPM_BUILD_DIR:-$root/build}/bin
samples=${DDPM_GUIDE_SAMPLES:-1000} np=${DDPM_GUIDE_NP:-2} respacing=${DDPM_GUIDE_RESPACING:-25}
batch=${DDPM_GUIDE_BATCH:-100} seed=${DDPM_GUIDE_SEED:-0}
data=${DDPM_GUIDE_DATA:-$root/runs/fmnist-train.h5}
extractor=${DDPM_GUIDE_EXTRACTOR:-domain:$root/runs/fmnist_net.pt}
stats=()
[[ -z ${DDPM_GUIDE_STATS:-} ]] || stats=(--fid-stats "$DDPM_GUIDE_STATS")
# shellcheck source=/dev/null
source "$root/launch/env.sh"
mkdir -p "$out"
rows=()
for s in "${scales[@]}"; do
  start=$(date +%s)
  mpirun -np "$np" "$bin/ddpm_sample" --checkpoint "$model" --classifier "$classifier" --classifier-scale "$s" \
    --num-samples "$samples" --batch-size "$batch" --respacing "$respacing" --seed "$seed" \
    --out "$out/s$s.npz" --grid "$out/s$s.png" | grep -v '^batch ' || exit 1
  sampled=$(date +%s)
  "$bin/ddpm_eval" --fid-npz "$out/s$s.npz" --data "$data" --fid-extractor "$extractor" "${stats[@]}" \
    --out-json "$out/s$s.json" | grep -E '^(fid|accuracy) ' || exit 1
  read -r acc fid < <(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['accuracy'], j['fid'])" \
    "$out/s$s.json")
  rows+=("$(printf '| %s | %.3f | %.1f | %d |' "$s" "$acc" "$fid" $((sampled - start)))")
done
echo
echo "classifier guidance: $model guided by $classifier; $samples samples (respacing $respacing, seed $seed," \
  "$np rank(s)), labels drawn per sample; accuracy and FID by $extractor against $data"
echo
echo "| scale s | accuracy on the requested label | domain FID | sampling seconds |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
