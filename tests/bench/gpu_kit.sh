#!/usr/bin/env bash
# The GPU kit: everything the GPU checks need, packed on the development machine and run in one
# command on the lent GPU machine (tests/bench/README.md, "The GPU kit"; docs/ENVIRONMENT.md).
#   pack: a tarball of a built tree's binaries (benches, ddpm_train, the `ctest -L gpu` tests), its
#         ctest files, the sources the tests and vs_eager read, and the shared-library closure minus
#         what the GPU machine has (torch and its nvidia libraries, CUDA, glibc), OpenMPI's runtime
#         (orted, plugins, PMIx) laid out for OPAL_PREFIX relocation.
#   run:  unpack it, point the binaries at the kit's and the machine's torch libraries, and run
#         the checks most important first, each under `timeout`, within a time budget, writing each
#         log and a summary figures.md under the out folder as it goes.
# The binaries get the kit's LD_LIBRARY_PATH through small wrappers (build/bin/NAME runs
# build/bin/.real/NAME), so that python (vs_eager.py, the reference scripts) keeps its own libraries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIT_BINARIES=(ddpm_bench_step ddpm_bench_unet ddpm_train ddpm_prepare ddpm_dist_info)
# Packages of OpenMPI's runtime, copied whole (minus docs) so that OPAL_PREFIX relocation works.
MPI_PACKAGES=(libopenmpi3 openmpi-bin openmpi-common libpmix2)
GOLDEN_MAX_BYTES=1048576 # golden files above this are not needed by the gpu tests (fixtures rewrite theirs)

usage() {
  cat <<'EOF'
Usage:
  tests/bench/gpu_kit.sh pack [--build DIR] [--out FILE]
      Pack the GPU kit from a built tree (default: $DDPM_BUILD_DIR or ./build) into FILE
      (default: build/gpu-kit.tgz of this checkout). Reads the build, writes only FILE.
  tests/bench/gpu_kit.sh run [--kit FILE] [--out DIR] [--budget SECONDS] [--cpu-smoke]
                             [--only STEPS] [--keep]
      On the GPU machine: unpack FILE (default build/gpu-kit.tgz), run the checks within SECONDS
      (default 480), logs and figures.md into DIR (default: $OUT, else ./gpu-out).
      STEPS: a comma list of env,ctest,vs_cifar,levers,train,vs_small (default: all, in this order).
      --cpu-smoke: the CPU variants of the benches (small), to exercise the kit without a GPU.
      --keep: keep the unpacked kit (its path is printed). DDPM_PYTHON: the python with torch
      (default /opt/torch/.venv/bin/python3).
  tests/bench/gpu_kit.sh sandbox-run [run's arguments]
      On this machine (root): `run` in a mount namespace that hides the system's copies of what
      the kit carries (its libraries, OpenMPI, PMIx, hwloc plugins) and the packed build, as on
      the GPU machine; with --cpu-smoke where there is no GPU.
  The lent machine, through the run tool:
      carry ["build/gpu-kit.tgz"], command "tests/bench/gpu_kit.sh run", timeout_s 540.
EOF
}

die() { echo "gpu_kit.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# pack

# "soname path" for every library the ELF files load (ldd's transitive closure); path NOTFOUND
# when ldd cannot find it.
closure() {
  local f
  for f in "$@"; do
    ldd "$f" 2>/dev/null | awk '$2 == "=>" { if ($3 ~ /^\//) print $1, $3; else if ($3 == "not") print $1, "NOTFOUND" }' || true
  done | sort -u
}

# provided | glibc | gcc | kit: where the GPU machine gets this library from.
classify() {
  local name="$1" path="$2" real
  real="$(readlink -f "$path")"
  case "$real" in */site-packages/* | /usr/local/cuda* | /opt/torch/*) echo provided; return ;; esac
  case "$name" in
    libcuda.so* | libnvidia-*) echo provided ;;
    libstdc++.so.6 | libgcc_s.so.1) echo gcc ;;
    *) if grep -qxF "$name" "$GLIBC_NAMES"; then echo glibc; else echo kit; fi ;;
  esac
}

sed_escape() { printf '%s' "$1" | sed 's/[][\.*^$#]/\\&/g'; }

pack() {
  local build="${DDPM_BUILD_DIR:-$ROOT/build}" out=""
  while (($#)); do
    case "$1" in
      --build) build="$2"; shift 2 ;;
      --out) out="$2"; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) die "pack: unknown argument '$1' (see --help)" ;;
    esac
  done
  build="$(cd "$build" && pwd)" || die "pack: no build folder '$build'"
  out="${out:-$ROOT/build/gpu-kit.tgz}"
  [[ -f "$build/CMakeCache.txt" ]] || die "pack: $build is not a configured build (no CMakeCache.txt)"
  local src python ctest_bin
  src="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")"
  python="$(sed -n 's/^DDPM_PYTHON:[A-Z]*=//p' "$build/CMakeCache.txt")"
  ctest_bin="$(sed -n 's/^CMAKE_CTEST_COMMAND:INTERNAL=//p' "$build/CMakeCache.txt")"
  [[ -d "$src" && -x "$python" && -x "$ctest_bin" ]] || die "pack: source '$src', python '$python' or ctest '$ctest_bin' of $build missing"

  local kit L newest stage
  stage="$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit-pack.XXXXXX")"
  PACK_STAGE="$stage"
  trap 'rm -rf "$PACK_STAGE"' EXIT
  kit="$stage/gpu-kit"
  L="$kit/root/usr/lib/x86_64-linux-gnu"
  mkdir -p "$kit/build/bin/.real" "$kit/build/golden" "$kit/build/tmp" "$kit/gcc" "$kit/src" "$L"
  GLIBC_NAMES="$stage/glibc-names"
  dpkg -L libc6 | sed -n 's|.*/||; /\.so/p' | sort -u >"$GLIBC_NAMES"

  # The gpu tests' binaries, from ctest's own list (fixture setups included).
  local tests_json
  tests_json="$(cd "$build" && "$ctest_bin" -L gpu --show-only=json-v1)"
  local -a names=("${KIT_BINARIES[@]}")
  local cmd0
  while read -r cmd0; do
    [[ "$cmd0" == "$build/bin/"* ]] && names+=("${cmd0#"$build/bin/"}")
  done < <(printf '%s' "$tests_json" | "$python" -c 'import json,sys; [print(t["command"][0]) for t in json.load(sys.stdin)["tests"]]')
  echo "[pack] binaries: ${names[*]}"

  local n
  for n in "${names[@]}"; do
    [[ -x "$build/bin/$n" ]] || die "pack: $build/bin/$n missing; build it: cmake --build $build --target $n"
    strip --strip-unneeded -o "$kit/build/bin/.real/$n" "$build/bin/$n"
    cat >"$kit/build/bin/$n" <<EOF
#!/usr/bin/env bash
# gpu_kit.sh wrapper: the kit's library path (DDPM_KIT_LD_LIBRARY_PATH, set by gpu_kit.sh run) for this binary only.
export LD_LIBRARY_PATH="\${DDPM_KIT_LD_LIBRARY_PATH:+\$DDPM_KIT_LD_LIBRARY_PATH:}\${LD_LIBRARY_PATH:-}"
exec "\$(dirname "\${BASH_SOURCE[0]}")/.real/$n" "\$@"
EOF
    chmod +x "$kit/build/bin/$n"
  done

  # OpenMPI's runtime, installed files in their /usr layout (OPAL_PREFIX=<kit>/root/usr).
  local f
  dpkg -L "${MPI_PACKAGES[@]}" | grep -vE '^/\.$|^/usr/share/(doc|man|lintian)(/|$)|\.l?a$' | sed 's|^/||' | sort -u |
    tar -C / -cf - --no-recursion -T - | tar -C "$kit/root" -xf -
  local link target
  while read -r link; do # absolute links (alternatives) become relative ones inside the kit
    target="$(readlink -f "${link#"$kit/root"}")"
    [[ -e "$kit/root$target" ]] && ln -sfr "$kit/root$target" "$link"
  done < <(find "$kit/root" -type l -lname '/*')
  [[ -e "$kit/root/usr/bin/mpirun" ]] || ln -s mpirun.openmpi "$kit/root/usr/bin/mpirun"
  [[ -e "$kit/root/usr/bin/mpiexec" ]] || ln -s mpiexec.openmpi "$kit/root/usr/bin/mpiexec"

  # The shared-library closure of the binaries and of OpenMPI's programs and plugins.
  local -a elves=()
  while read -r f; do elves+=("$f"); done < <(find "$kit/build/bin/.real" "$kit/root" -type f \( -perm -u+x -o -name '*.so*' \))
  local name path where missing=0
  : >"$stage/libs"
  while read -r name path; do
    if [[ "$path" == NOTFOUND ]]; then echo "[pack] warning: $name not found on this machine"; missing=1; continue; fi
    where="$(classify "$name" "$path")"
    echo "$where $name $path" >>"$stage/libs"
    case "$where" in
      kit) [[ -e "$L/$name" || -e "$L/openmpi/lib/$name" ]] || cp -L "$path" "$L/$name" ;;
      gcc) cp -L "$path" "$kit/gcc/$name" ;;
    esac
  done < <(closure "${elves[@]}")
  ((missing == 0)) || echo "[pack] (a plugin whose library is missing is skipped by OpenMPI at run time)"
  echo "[pack] libraries: $(grep -c '^kit ' "$stage/libs") in the kit, $(grep -c '^gcc ' "$stage/libs") libstdc++/libgcc_s, $(grep -c '^provided ' "$stage/libs") from the GPU machine's torch/CUDA, $(grep -c '^glibc ' "$stage/libs") glibc"

  # ctest's files, with this machine's paths as placeholders (run rewrites them to the kit's).
  local rel
  while read -r f; do
    rel="${f#"$build/"}"
    mkdir -p "$kit/build/$(dirname "$rel")"
    sed -e "s#$(sed_escape "$python")#@KIT_PYTHON@#g" -e "s#$(sed_escape "$build")#@KIT_BUILD@#g" \
      -e "s#$(sed_escape "$src")#@KIT_SRC@#g" "$f" >"$kit/build/$rel"
  done < <(find "$build" -name CTestTestfile.cmake -not -path '*/CMakeFiles/*')
  find "$build/golden" -maxdepth 1 -type f -size -"$GOLDEN_MAX_BYTES"c -exec cp {} "$kit/build/golden/" \;
  # The sources the tests and benches read (tests/, launch/), as the build's checkout has them.
  (cd "$src" && git ls-files -z tests launch | xargs -0 cp -a --parents -t "$kit/src")

  {
    echo "packed: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -n)"
    echo "build: $build"
    echo "source: $src at $(git -C "$src" rev-parse HEAD)$(git -C "$src" diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "binaries: ${names[*]}"
    newest="$(for n in "${names[@]}"; do stat -c '%Y %n' "$build/bin/$n"; done | sort -n | tail -1)"
    echo "newest binary: $(date -u -d "@${newest%% *}" '+%Y-%m-%d %H:%M:%S UTC') ${newest#* }"
    echo "python of the build: $python"
    echo "needs glibc: $(find "$kit" -type f \( -perm -u+x -o -name '*.so*' \) -exec grep -aoh 'GLIBC_2\.[0-9]*' {} + | sort -uV | tail -1 | sed 's/GLIBC_//')"
    echo "libraries (where name path):"
    sort "$stage/libs"
  } >"$kit/MANIFEST"

  mkdir -p "$(dirname "$out")"
  tar -C "$stage" -czf "$out" gpu-kit
  local bytes
  bytes="$(stat -c %s "$out")"
  echo "[pack] $out: $((bytes / 1048576)) MiB ($(du -sh "$kit" | cut -f1) unpacked)"
  ((bytes < 60 * 1048576)) || echo "[pack] warning: over 60 MiB; the run tool carries 64 MiB in all"
}

# ---------------------------------------------------------------------------------------------
# run

# The GLIBCXX version a libstdc++ provides at most, e.g. 3.4.30 (empty when unknown).
glibcxx_max() { grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$1" 2>/dev/null | sed 's/GLIBCXX_//' | sort -uV | tail -1; }

# Which lib folder each library of a kit binary comes from (kit, torch/nvidia, system), and any missing.
ldd_report() {
  local bin="$1"
  echo "ldd $bin (with the kit's library path):"
  LD_LIBRARY_PATH="$DDPM_KIT_LD_LIBRARY_PATH" ldd "$bin" | awk -v kit="$KIT" '
    $2 == "=>" { n++; if ($3 == "not") { miss++; print "  MISSING " $1 } else if (index($3, kit) == 1) k++;
                 else if ($3 ~ /site-packages|cuda/) t++; else { s++; sys = sys " " $1 } }
    END { printf "  %d libraries: %d from the kit, %d from torch/CUDA, %d from the system (%s ), %d missing\n", n, k, t, s, sys, miss }'
}
export -f ldd_report

# Every library the dynamic loader initialised in one run of ddpm_dist_info (MPI_Init: a singleton
# that starts orted) and in the processes it started, by folder: LD_DEBUG=libs.
ld_debug_report() {
  local dir="$KIT/ld-debug" f prog
  rm -rf "$dir" && mkdir -p "$dir"
  LD_DEBUG=libs LD_DEBUG_OUTPUT="$dir/ld" LD_LIBRARY_PATH="$DDPM_KIT_LD_LIBRARY_PATH" "$KIT/build/bin/.real/ddpm_dist_info" 2>&1 | tail -3
  for f in "$dir"/ld.*; do
    prog="$(grep -aom1 'initialize program: [^ ]*' "$f" | sed 's/.*: //')"
    grep -ao 'calling init: .*' "$f" | sed 's/calling init: //' | sort -u | awk -v kit="$KIT" -v prog="$prog" '
      { n++; if (index($1, kit) == 1) k++; else if ($1 ~ /site-packages|cuda/) t++; else { s++; sys = sys " " $1 } }
      END { printf "LD_DEBUG=libs, process %s: %d libraries initialised: %d from the kit, %d from torch/CUDA, %d from the system:%s\n", prog, n, k, t, s, sys }'
  done
}
export -f ld_debug_report

environment_report() {
  date -u
  echo "host: $(uname -n), $(nproc) CPUs"
  if nvidia-smi -L; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  else
    echo "nvidia-smi: no GPU visible"
  fi
  "$DDPM_PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  echo "libstdc++: $KIT_GCC_NOTE"
  sed -n '1,8p' "$KIT/MANIFEST"
  local need have
  need="$(sed -n 's/^needs glibc: //p' "$KIT/MANIFEST")"
  have="$(getconf GNU_LIBC_VERSION | sed 's/glibc //')"
  if [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" == "$need" ]]; then
    echo "glibc $have: ok (the kit needs $need)"
  else
    echo "gpu_kit.sh: ERROR: glibc $have here, the kit needs $need: pack on a machine with an older glibc"
  fi
  ldd_report "$KIT/build/bin/.real/ddpm_bench_step"
  ldd_report "$KIT/root/usr/bin/orted"
  echo "LD_LIBRARY_PATH of the binaries: $DDPM_KIT_LD_LIBRARY_PATH"
  echo "OPAL_PREFIX=$OPAL_PREFIX"
  ld_debug_report
}
export -f environment_report

# ctest -L gpu in the kit's build; on a GPU (MODE gpu) a skipped CUDA test makes the step fail.
ctest_gpu() {
  cd "$KIT/build" || return 1
  local rc=0 skipped
  "$CTEST_BIN" -L gpu -V --timeout 150 2>&1 | tee "$KIT/ctest.out" || rc=$?
  skipped="$(grep -aoE '^[0-9]+: \[  SKIPPED \] [A-Za-z0-9_./]+ \(' "$KIT/ctest.out" | sed 's/.*\] //; s/ (//' | sort -u)"
  echo "gpu tests skipped: $(printf '%s' "$skipped" | grep -c .) ${skipped//$'\n'/ }"
  if ((rc == 0)) && [[ $MODE == gpu && -n "$skipped" ]]; then
    echo "gpu_kit.sh: GPU tests skipped on the GPU machine: is the GPU visible (nvidia-smi, torch.cuda)?"
    rc=3
  fi
  return "$rc"
}
export -f ctest_gpu

# A gtest binary; on a GPU (MODE gpu) a skipped test makes the step fail.
gtest_on_gpu() {
  local rc=0
  "$@" 2>&1 | tee "$KIT/gtest.out" || rc=$?
  if ((rc == 0)) && [[ $MODE == gpu ]] && grep -aq '^\[  SKIPPED \]' "$KIT/gtest.out"; then
    echo "gpu_kit.sh: skipped on the GPU machine: is the GPU visible?"
    rc=3
  fi
  return "$rc"
}
export -f gtest_on_gpu

# train_throughput PRESET SIZE CHANNELS STEPS [ddpm_train args]: ddpm_train itself (the whole step:
# read-ahead, loss, all-reduce, AdamW, EMA, logging) on random uint8 images of SIZE x SIZE x
# CHANNELS (2048 of them; speed does not depend on the pixels), its img/s and per-phase seconds.
train_throughput() {
  local preset=$1 size=$2 ch=$3 steps=$4 work="$KIT/train-$1"
  shift 4
  mkdir -p "$work"
  "$DDPM_PYTHON" -c "import numpy as np, sys; np.save(sys.argv[1], np.random.RandomState(0).randint(0, 256, (2048, $size, $size, $ch), dtype=np.uint8))" "$work/images.npy" || return 1
  "$KIT/build/bin/ddpm_prepare" "$work/images.npy" -o "$work/images.h5" -q || return 1
  "$KIT/build/bin/ddpm_train" --preset "$preset" --data "$work/images.h5" --run-dir "$work/run" --max-steps "$steps" \
    --log-every $((steps / 4)) --sample-every 0 --fid-every 0 --save-every 1000000 --metrics-addr none "$@" 2>&1 |
    grep -aE '^step |img/s|[Ee]rror|done at'
  return "${PIPESTATUS[0]}"
}
export -f train_throughput

KEY_LINES='^gpu tests skipped|^([0-9]+: )?\[(check|time|profile|maxdiff)\]|^\||img/s|Test +#[0-9]+:|tests passed|tests failed|\*\*\*|\[  (PASSED|FAILED) +\]|MISSING|libraries|^torch|^GPU|nvidia-smi|[Ee]rror:|ERROR|what\(\)|not found|Total Test time|gpu_kit.sh:'

# step NAME MAX_SECONDS COMMAND...: run it under timeout within what is left of the budget; the log
# goes to NN-NAME.log, its summary to figures.md, both as soon as the step ends.
# shellcheck disable=SC2016 # the backquotes are markdown
step() {
  local name="$1" max="$2"
  shift 2
  STEP_NO=$((STEP_NO + 1))
  local left=$((BUDGET - (SECONDS - START))) log rc t0 secs limit shown="${*//$KIT/<kit>}"
  log="$(printf '%s/%02d-%s.log' "$OUTDIR" "$STEP_NO" "$name")"
  if ((left < 10)); then
    printf '| %s | `%s` | skipped: budget spent | 0 |\n' "$name" "$shown" >>"$OUTDIR/steps.md"
    echo "[run] $name: skipped (budget spent)"
    FAILED=$((FAILED + 1))
    write_figures
    return 0
  fi
  limit=$((max < left ? max : left))
  echo "[run] $name (limit ${limit} s): $*"
  echo "\$ $* (timeout ${limit} s)" >"$log"
  t0=$SECONDS
  rc=0
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1 </dev/null || rc=$?
  secs=$((SECONDS - t0))
  if [[ $rc == 124 || $rc == 137 ]]; then echo "[timed out after ${limit} s]" >>"$log"; fi
  ((rc == 0)) || FAILED=$((FAILED + 1))
  printf '| %s | `%s` | %s | %s |\n' "$name" "$shown" "$rc$([[ $rc == 124 || $rc == 137 ]] && echo ' (timeout)')" "$secs" >>"$OUTDIR/steps.md"
  {
    printf '\n## %s\n\n`%s`: exit %s, %s s, log %s\n\n```\n' "$name" "$shown" "$rc" "$secs" "$(basename "$log")"
    { grep -aE "$KEY_LINES" "$log" | grep -avE 'maxdiff|^frame #|OMPI_MCA' | head -50 || true
      grep -a '\[maxdiff\]' "$log" | head -30 || true; tail -n 3 "$log"; } | { grep -v '^\$ ' || true; } | awk '!seen[$0]++'
    printf '```\n'
  } >>"$OUTDIR/sections.md"
  write_figures
  echo "[run] $name: exit $rc, $secs s"
}

write_figures() {
  {
    echo "# GPU kit run ($MODE)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -n), budget $BUDGET s, used $((SECONDS - START)) s, $FAILED step(s) not ok."
    sed -n '1,3p' "$KIT/MANIFEST" | sed 's/^/kit /'
    echo
    echo "| step | command | exit | s |"
    echo "|---|---|---|---|"
    cat "$OUTDIR/steps.md"
    cat "$OUTDIR/sections.md"
  } >"$OUTDIR/figures.md"
}

run() {
  local kitfile="$ROOT/build/gpu-kit.tgz" only="env,ctest,vs_cifar,levers,train,vs_small" keep=0
  OUTDIR="${OUT:-$PWD/gpu-out}"
  BUDGET=480
  MODE=gpu
  while (($#)); do
    case "$1" in
      --kit) kitfile="$2"; shift 2 ;;
      --out) OUTDIR="$2"; shift 2 ;;
      --budget) BUDGET="$2"; shift 2 ;;
      --only) only="$2"; shift 2 ;;
      --cpu-smoke) MODE="cpu-smoke"; shift ;;
      --keep) keep=1; shift ;;
      -h | --help) usage; exit 0 ;;
      *) die "run: unknown argument '$1' (see --help)" ;;
    esac
  done
  START=$SECONDS
  STEP_NO=0
  FAILED=0
  [[ -f "$kitfile" ]] || die "run: no kit at $kitfile; make one with: tests/bench/gpu_kit.sh pack"
  mkdir -p "$OUTDIR"
  OUTDIR="$(cd "$OUTDIR" && pwd)"
  : >"$OUTDIR/steps.md"
  : >"$OUTDIR/sections.md"
  local tmp
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit.XXXXXX")"
  RUN_TMP="$tmp"
  if ((keep)); then echo "[run] kit unpacked in $tmp/gpu-kit (kept)"; else trap 'rm -rf "$RUN_TMP"' EXIT; fi
  tar -C "$tmp" -xzf "$kitfile"
  KIT="$tmp/gpu-kit"
  export KIT

  export DDPM_PYTHON="${DDPM_PYTHON:-/opt/torch/.venv/bin/python3}"
  [[ -x "$DDPM_PYTHON" ]] || echo "[run] warning: no python at $DDPM_PYTHON (set DDPM_PYTHON); the python steps will fail"
  local torch_dirs
  torch_dirs="$(timeout 120 "$DDPM_PYTHON" -c 'import torch, os, glob
d = os.path.dirname(torch.__file__)
print(":".join([os.path.join(d, "lib")] + sorted(glob.glob(os.path.join(os.path.dirname(d), "nvidia", "*", "lib")))))' 2>/dev/null)" ||
    echo "[run] warning: $DDPM_PYTHON cannot import torch; the binaries will not find libtorch"
  local L="$KIT/root/usr/lib/x86_64-linux-gnu" sys_gcc kit_max sys_max gcc_dir=""
  # libstdc++/libgcc_s of the kit only where the machine's are older than the kit's.
  sys_gcc="$(/sbin/ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ { print $NF; exit }')"
  kit_max="$(glibcxx_max "$KIT/gcc/libstdc++.so.6")"
  sys_max=""
  if [[ -n "$sys_gcc" ]]; then sys_max="$(glibcxx_max "$sys_gcc")"; fi
  if [[ -z "$sys_max" || "$(printf '%s\n%s\n' "$sys_max" "$kit_max" | sort -V | tail -1)" != "$sys_max" ]]; then
    gcc_dir=":$KIT/gcc"
    KIT_GCC_NOTE="the kit's (GLIBCXX $kit_max; the machine's ${sys_gcc:-none} has ${sys_max:-none})"
  else
    KIT_GCC_NOTE="the machine's $sys_gcc (GLIBCXX $sys_max >= the kit's $kit_max)"
  fi
  export KIT_GCC_NOTE
  export DDPM_KIT_LD_LIBRARY_PATH="$L:$L/openmpi/lib$gcc_dir${torch_dirs:+:$torch_dirs}"
  if [[ -d /usr/local/cuda/lib64 ]]; then DDPM_KIT_LD_LIBRARY_PATH+=":/usr/local/cuda/lib64"; fi
  # OpenMPI relocated into the kit (docs/ENVIRONMENT.md); the project's MPI settings (launch/openmpi.env).
  export OPAL_PREFIX="$KIT/root/usr" OPAL_SYSCONFDIR="$KIT/root/etc/openmpi"
  export PMIX_MCA_mca_base_component_path="$L/pmix2/lib/pmix" PMIX_PKGDATADIR="$L/pmix2/share/pmix"
  export PMIX_MCA_gds="${PMIX_MCA_gds:-hash}"
  export PATH="$KIT/root/usr/bin:$PATH"
  export DDPM_BUILD_DIR="$KIT/build"
  # shellcheck source=/dev/null
  source "$KIT/src/launch/env.sh"
  local f
  while read -r f; do
    sed -i -e "s#@KIT_PYTHON@#$DDPM_PYTHON#g" -e "s#@KIT_BUILD@#$KIT/build#g" -e "s#@KIT_SRC@#$KIT/src#g" "$f"
  done < <(find "$KIT/build" -name CTestTestfile.cmake)
  CTEST_BIN="$(command -v ctest || echo "$(dirname "$DDPM_PYTHON")/ctest")"
  export CTEST_BIN MODE

  local B="$KIT/build/bin" V="$KIT/src/tests/bench/vs_eager.sh"
  local -a vs=("$V" --build "$KIT/build")
  has() { [[ ",$only," == *",$1,"* ]]; }
  has env && step environment 60 bash -c environment_report
  has ctest && step ctest_gpu 200 bash -c ctest_gpu
  if [[ $MODE == gpu ]]; then
    local -a cuda=(--device cuda --precision bf16 --batch 128)
    local -a unet=("$B/ddpm_bench_unet" --device cuda --preset ddpm-cifar10 --preset improved-cifar10 --batch 128 --steps 30)
    local -a before=(--set sdpa_attention=false --set fused_group_norm=false)
    has vs_cifar && step vs_eager_ddpm_cifar10 170 "${vs[@]}" "${cuda[@]}" --preset ddpm-cifar10 --json "$OUTDIR/vs_eager_ddpm-cifar10.json"
    has vs_cifar && step vs_eager_improved_cifar10 170 "${vs[@]}" "${cuda[@]}" --preset improved-cifar10 --json "$OUTDIR/vs_eager_improved-cifar10.json"
    has vs_cifar && step vs_eager_ddpm_cifar10_channels_last 170 "${vs[@]}" "${cuda[@]}" --preset ddpm-cifar10 --set 'model_overrides={"channels_last":true}' --json "$OUTDIR/vs_eager_ddpm-cifar10_cl.json"
    has levers && step unet_bf16_before 60 "${unet[@]}" --bf16 "${before[@]}"
    has levers && step unet_bf16_default 60 "${unet[@]}" --bf16
    has levers && step unet_bf16_no_sdpa 60 "${unet[@]}" --bf16 --set sdpa_attention=false
    has levers && step unet_bf16_cl_before 60 "${unet[@]}" --bf16 --channels-last "${before[@]}"
    has levers && step unet_bf16_cl_default 60 "${unet[@]}" --bf16 --channels-last
    has levers && step unet_bf16_cl_activations 60 "${unet[@]}" --bf16 --set channels_last=true
    has levers && step unet_fp32_before 60 "${unet[@]}" "${before[@]}"
    has levers && step unet_fp32_default 60 "${unet[@]}"
    has levers && step group_norm_silu_times 60 bash -c "gtest_on_gpu '$B/test_ops_group_norm_silu' --gtest_filter='*PrintTimes'"
    has train && step train_ddpm_cifar10_bf16 120 bash -c "train_throughput ddpm-cifar10 32 3 200 --precision bf16"
    has vs_small && step vs_eager_tiny_fmnist 200 "${vs[@]}" "${cuda[@]}" --preset tiny --preset fmnist-small --json "$OUTDIR/vs_eager_small.json"
  else # the same pipeline on the CPU, small
    local -a cpu=(--device cpu --threads 1 --warmup 1 --steps 2 --rounds 1)
    local -a unet=("$B/ddpm_bench_unet" --device cpu --preset tiny --batch 4 --steps 1 --threads 1)
    has vs_cifar && step vs_eager_tiny_cpu 200 "${vs[@]}" "${cpu[@]}" --preset tiny --batch 8 --json "$OUTDIR/vs_eager_tiny.json"
    has vs_cifar && step vs_eager_cifar_check_cpu 200 "${vs[@]}" --device cpu --threads 1 --check-only --preset ddpm-cifar10 --preset improved-cifar10 --batch 2 --set 'model_overrides={"model_channels": 32}'
    has levers && step unet_cpu_before 60 "${unet[@]}" --set sdpa_attention=false --set fused_group_norm=false
    has levers && step unet_cpu_default 60 "${unet[@]}"
    has levers && step group_norm_silu_times 60 "$B/test_ops_group_norm_silu" --gtest_filter='*PrintTimes'
    has vs_small && step vs_eager_fmnist_cpu 200 "${vs[@]}" "${cpu[@]}" --preset fmnist-small --batch 4
    has train && step train_tiny_cpu 120 bash -c "train_throughput fmnist-demo 16 1 8 --model tiny --global-batch 8 --model-overrides '{\"in_channels\":1,\"out_channels\":1}'"
  fi
  write_figures
  cat "$OUTDIR/sections.md" # the summary last: the run tool returns the end of the output
  echo
  sed -n '1,/^## /p' "$OUTDIR/figures.md" | sed '$d'
  echo "[run] done in $((SECONDS - START)) s; logs and figures.md in $OUTDIR"
  ((FAILED == 0))
}

# ---------------------------------------------------------------------------------------------
# sandbox-run: `run` on this machine as the GPU machine would see it (root, unshare): a private mount
# namespace hides the system's copies of what the kit carries (its libraries, OpenMPI, PMIx, hwloc's
# plugins) and the build it was packed from; the libraries the torch python loads stay visible.

sandbox_run() {
  local kitfile="$ROOT/build/gpu-kit.tgz" i
  local -a args=("$@")
  for ((i = 0; i < ${#args[@]}; i++)); do [[ "${args[i]}" == --kit ]] && kitfile="${args[i + 1]}"; done
  if [[ "$(id -u)" != 0 ]] || ! command -v unshare >/dev/null; then die "sandbox-run: needs root and unshare"; fi
  [[ -f "$kitfile" ]] || die "sandbox-run: no kit at $kitfile"
  local python="${DDPM_PYTHON:-/opt/torch/.venv/bin/python3}" tmp
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit-sandbox.XXXXXX")"
  SANDBOX_TMP="$tmp"
  trap 'rm -rf "$SANDBOX_TMP"' EXIT
  cp "$kitfile" "$tmp/gpu-kit.tgz"
  tar -xzOf "$kitfile" gpu-kit/MANIFEST >"$tmp/MANIFEST"
  "$python" -c 'import os, ctypes, hashlib, ssl, h5py, numpy, torch, torch.distributed, torch.profiler, torch.utils.flop_counter
print("\n".join(sorted({os.path.realpath(l.split()[-1]) for l in open("/proc/self/maps") if ".so" in l})))' >"$tmp/python-libs"
  local where name path real
  while read -r where name path; do
    [[ "$where" == kit || "$where" == gcc ]] || continue
    real="$(readlink -f "$path")"
    grep -qxF "$real" "$tmp/python-libs" || echo "file $real"
  done < <(sed -n '/^libraries/,$p' "$tmp/MANIFEST" | tail -n +2) >"$tmp/hide"
  for path in /usr/bin/orted /usr/bin/orterun; do if [[ -e "$path" ]]; then echo "file $path"; fi; done >>"$tmp/hide"
  local src
  src="$(sed -n 's/^source: \([^ ]*\) at .*/\1/p' "$tmp/MANIFEST")"
  [[ "$ROOT/" == "$src/"* ]] && src="" # this checkout is the packed one: keep it
  for path in /usr/lib/x86_64-linux-gnu/{openmpi,pmix2,hdf5,hwloc} /etc/openmpi /usr/share/openmpi \
    "$(sed -n 's/^build: //p' "$tmp/MANIFEST")" "$src"; do
    if [[ -n "$path" && -d "$path" ]]; then echo "dir $path"; fi
  done >>"$tmp/hide"
  echo "[sandbox] hiding $(grep -c '^file' "$tmp/hide") files and $(grep -c '^dir' "$tmp/hide") folders: $(awk '{printf " %s", $2}' "$tmp/hide")"
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare -m --propagation private bash -c 'while read -r kind path; do
      if [[ $kind == dir ]]; then mount -t tmpfs none "$path"; else mount --bind /dev/null "$path"; fi
    done <"$1/hide"
    shift; exec "$@"' _ "$tmp" "$ROOT/tests/bench/gpu_kit.sh" run "${args[@]}" --kit "$tmp/gpu-kit.tgz"
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  sandbox-run) shift; sandbox_run "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
