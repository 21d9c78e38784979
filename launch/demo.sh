#!/usr/bin/env bash
# The README's main job. Until the trainer lands it sets up, builds, and prints the cosine
# schedule with ddpm_inspect, the tool users compare implementations with.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$DDPM_ROOT/launch/setup.sh"
"$DDPM_BUILD_DIR/bin/ddpm_inspect" schedule --schedule cosine --steps 10
