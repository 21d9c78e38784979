#!/usr/bin/env bash
# Runs every test: set-up when needed (packages, torch venv), an incremental build, then CTest.
# Extra arguments go to ctest, e.g. `./launch/test.sh -L cpu` or `./launch/test.sh -R unet`.
# GPU tests skip cleanly on machines without a GPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$DDPM_ROOT/launch/setup.sh"
cd "$DDPM_BUILD_DIR"
# Tests that measure something (tests/fault/) write "[figure] ..." lines to tmp/figures/<test>.txt:
# those written by this run are printed after ctest's summary.
mkdir -p tmp/figures
stamp="$(mktemp tmp/figures/.start.XXXXXX)"
rc=0
ctest --output-on-failure --timeout 900 -j"${DDPM_TEST_JOBS:-2}" "$@" || rc=$?
figures=$(find tmp/figures -name '*.txt' -newer "$stamp" | sort)
rm -f "$stamp"
if [ -n "$figures" ]; then
  echo; echo "Figures:"
  for f in $figures; do echo "$(basename "$f" .txt):"; sed 's/^/  /' "$f"; done
fi
exit "$rc"
