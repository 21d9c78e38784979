#!/usr/bin/env bash
# Runs every test: set-up when needed (packages, torch venv), an incremental build, then CTest.
# Extra arguments go to ctest, e.g. `./launch/test.sh -L cpu` or `./launch/test.sh -R unet`.
# GPU tests skip cleanly on machines without a GPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$DDPM_ROOT/launch/setup.sh"
cd "$DDPM_BUILD_DIR"
exec ctest --output-on-failure --timeout 900 -j"${DDPM_TEST_JOBS:-2}" "$@"
