#!/usr/bin/env bash
# The side-by-side benchmark, C++ trainer step against PyTorch eager (tests/bench/vs_eager.py; see
# tests/bench/README.md), with the project's torch virtual environment. Arguments go to vs_eager.py.
#   tests/bench/vs_eager.sh                                              # CPU: tiny, fmnist-small
#   tests/bench/vs_eager.sh --device cuda --precision bf16 --batch 128   # GPU: the four presets
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${DDPM_PYTHON:-$HOME/.cache/ddpm/venv-torch-2.11.0/bin/python3}"
[[ -x "$python" ]] || { echo "vs_eager.sh: no python at $python; run launch/setup.sh or set DDPM_PYTHON" >&2; exit 1; }
exec "$python" "$here/vs_eager.py" "$@"
