# Shared settings for the launch/ scripts (sourced, not run). Every value can be overridden from
# the environment. The torch venv lives outside the repository so every clone reuses it.
DDPM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DDPM_TORCH_VERSION="${DDPM_TORCH_VERSION:-2.11.0}"
export DDPM_VENV="${DDPM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpm/venv-torch-${DDPM_TORCH_VERSION}}"
export DDPM_BUILD_DIR="${DDPM_BUILD_DIR:-$DDPM_ROOT/build}"
export PATH="$DDPM_VENV/bin:$PATH"
# OpenMPI in containers and as root (see ../shared/ENVIRONMENT.md); harmless elsewhere.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_mca_base_component_show_load_errors="${OMPI_MCA_mca_base_component_show_load_errors:-0}"
