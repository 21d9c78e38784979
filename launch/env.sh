# Shared settings for the launch/ scripts (sourced, not run). Every value can be overridden from
# the environment. The torch venv lives outside the repository so every clone reuses it.
DDPM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DDPM_TORCH_VERSION="${DDPM_TORCH_VERSION:-2.11.0}"
export DDPM_VENV="${DDPM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpm/venv-torch-${DDPM_TORCH_VERSION}}"
export DDPM_BUILD_DIR="${DDPM_BUILD_DIR:-$DDPM_ROOT/build}"
export PATH="$DDPM_VENV/bin:$PATH"
# OpenMPI in containers and as root (launch/openmpi.env); harmless elsewhere. A value already in
# the environment wins; the run-as-root permissions are given to root only.
while IFS='=' read -r ddpm_key ddpm_value; do
  case "$ddpm_key" in '' | '#'*) continue ;; OMPI_ALLOW_RUN_AS_ROOT*) [ "$(id -u)" = 0 ] || continue ;; esac
  export "$ddpm_key=${!ddpm_key:-$ddpm_value}"
done < "$DDPM_ROOT/launch/openmpi.env"
unset ddpm_key ddpm_value
