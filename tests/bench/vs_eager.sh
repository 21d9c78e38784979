#!/usr/bin/env bash
# The side-by-side benchmark, C++ trainer step against PyTorch eager (tests/bench/vs_eager.py; see
# tests/bench/README.md), with the project's settings (launch/env.sh: the torch virtual environment,
# the build folder, OpenMPI's settings for the C++ side's 1-rank MPI world). Arguments go to
# vs_eager.py; DDPM_PYTHON picks another python (e.g. /opt/torch/.venv/bin/python3 on the GPU machine).
#   tests/bench/vs_eager.sh                                              # CPU: tiny, fmnist-small
#   tests/bench/vs_eager.sh --device cuda --precision bf16 --batch 128   # GPU: the four presets
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../launch/env.sh"
python="${DDPM_PYTHON:-$DDPM_VENV/bin/python3}"
[[ -x "$python" ]] || { echo "vs_eager.sh: no python at $python; run launch/setup.sh or set DDPM_PYTHON" >&2; exit 1; }
exec "$python" "$here/vs_eager.py" "$@"
