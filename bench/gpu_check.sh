#!/usr/bin/env bash
# The one prepared command for a GPU machine (docs/design.md §5.4): build the CUDA extension, run the GPU
# tests and the op (and model) benchmarks, write logs and JSON under $OUT, print a summary last.
#
#   bash bench/gpu_check.sh              # OUT defaults to bench/results/local/<date>-gpu
#   OUT=/some/dir bash bench/gpu_check.sh
#
# Made for the reference box (H100, torch 2.11 + CUDA 13.0, Triton 3.6, 16 cores, no network,
# nothing to install): nothing here downloads anything. Every step runs under its own timeout
# inside an 8-minute budget, a failed step does not stop the later ones that can still run, and
# the summary is printed whatever happened. On a machine without a CUDA device it prints the
# environment, says that the GPU steps are skipped, and exits 0.
# Files under $OUT (at most 8, so that the device tool returns them all): gpu_check.log (every
# step's output), summary.md, ops-cuda.json, ops-cuda.md, and bench_model's files under model/.
# Where the copy has no git metadata, set ZEROMAMBA_COMMIT to the commit it was made from.
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=$(realpath -m "${OUT:-bench/results/local/$(date -u +%F)-gpu}")
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the reference box's python3 is the one that holds torch
unset ZEROMAMBA_POISON ZEROMAMBA_BACKEND TRITON_INTERPRET
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-470}  # seconds; the whole check must end within 8 minutes
JOBS=$(nproc)
SUMMARY=()  # "step|status|seconds|detail"
FAILED=0

left() { echo $((START + BUDGET - $(date +%s))); }

# step NAME MAX_SECONDS CMD...: run CMD with a timeout of min(MAX_SECONDS, time left), output
# appended to the log; sets STEP_RC and STEP_S.
step() {
  local name=$1 max=$2
  shift 2
  local limit
  limit=$(left)
  ((limit > max)) && limit=$max
  if ((limit < 10)); then
    STEP_RC=-1 STEP_S=0 FAILED=1
    echo "=== $name: skipped, the time budget is spent" | tee -a "$LOG"
    return
  fi
  echo "=== $name (timeout ${limit} s): $*" | tee -a "$LOG"
  local t0
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  STEP_RC=$?
  STEP_S=$(($(date +%s) - t0))
  echo "=== $name: exit $STEP_RC after ${STEP_S} s" | tee -a "$LOG"
  ((STEP_RC == 0)) || FAILED=1
}

status() {  # exit code -> word
  case $1 in
    0) echo ok ;;
    -1) echo "skipped (time budget spent)" ;;
    124 | 137) echo timeout ;;
    *) echo "failed ($1)" ;;
  esac
}

# --- environment -----------------------------------------------------------------------------
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "${ZEROMAMBA_COMMIT:-unknown}")
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then COMMIT="$COMMIT+dirty"; fi
export ZEROMAMBA_COMMIT=$COMMIT
{
  echo "=== environment: $(date -u '+%F %T UTC'), commit $COMMIT, $JOBS cores, repo $REPO"
  nvidia-smi || echo "nvidia-smi: not available"
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', \
torch.__version__, '| cuda', torch.version.cuda, '| device', \
torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  "$PY" -c "import triton; print('triton', triton.__version__)" || echo "triton: not importable"
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
} 2>&1 | tee -a "$LOG"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
then
  echo "gpu_check: no CUDA device visible: build, GPU tests and GPU benchmarks skipped" \
    | tee -a "$LOG"
  exit 0
fi

# --- build -----------------------------------------------------------------------------------
# --no-index/--no-deps/--no-build-isolation: nothing is resolved or fetched (no network there).
step build 200 env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="$JOBS" ZEROMAMBA_CUDA=1 \
  "$PY" -m pip install --no-index --no-deps --no-build-isolation \
  --disable-pip-version-check -e .
BUILD_RC=$STEP_RC
SUMMARY+=("build (pip install -e ., sm_90, $JOBS jobs)|$(status $STEP_RC)|$STEP_S|wall time")

step backends 60 "$PY" -c "import zeromamba
for name, info in zeromamba.available_backends().items():
    print(f'backend {name}: ' + ('+'.join(info.devices) or 'none'), info.reason)"
BACKENDS=$(sed -n 's/^backend \([a-z]*\): \([a-z+]*\).*/\1=\2/p' "$LOG" | tr '\n' ' ')
SUMMARY+=("available_backends|$(status $STEP_RC)|$STEP_S|$BACKENDS")

if ((BUILD_RC != 0)); then
  echo "gpu_check: the build failed; tests and benchmarks still run on what imports" \
    | tee -a "$LOG"
fi

# --- GPU tests -------------------------------------------------------------------------------
# The op tests add (cuda, *) parameters only when a GPU is present; -k picks them, the Triton
# and CUDA specific tests and anything marked gpu. Slow (thorough) tests stay out of the budget.
# -v: one line per test as it ends, so the per-file counts survive a timeout. Where installed
# (the reference box has both), pytest-xdist spreads the tests over 4 workers and
# pytest-timeout stops a single hung test.
# First, the Triton paths the CPU interpreter cannot check: reverse scans whose chunk spans
# several warps, and the 12544-step stage-1 map end to end.
step triton_first 60 "$PY" -m pytest tests/test_triton_kernels.py::test_gpu_scans_across_warps \
  tests/test_ops.py::test_ss2d_scan_large_map -k triton -v -p no:cacheprovider --tb=short -rfE
SUMMARY+=("pytest triton cross-warp scans + 12544-step map|$(status $STEP_RC)|$STEP_S|below")

PYTEST_EXTRA=()
"$PY" -c "import xdist" 2>/dev/null && PYTEST_EXTRA+=(-n 4)
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST_EXTRA+=(--timeout 90)
step tests 150 "$PY" -m pytest tests -v -m "not slow" -k "cuda or triton or gpu" \
  -p no:cacheprovider --tb=short -rfE "${PYTEST_EXTRA[@]}"
SUMMARY+=("pytest -m 'not slow' -k 'cuda or triton or gpu'|$(status $STEP_RC)|$STEP_S|below")

# --- op benchmarks ---------------------------------------------------------------------------
OPS_MAX=170
OPS_LIMIT=$(left)
((OPS_LIMIT > OPS_MAX)) && OPS_LIMIT=$OPS_MAX
step bench_ops "$OPS_MAX" "$PY" bench/bench_ops.py --device cuda --out "$OUT" \
  --time-limit $((OPS_LIMIT > 60 ? OPS_LIMIT - 50 : 10))
SUMMARY+=("bench/bench_ops.py --device cuda|$(status $STEP_RC)|$STEP_S|ops-cuda.json, .md")

# --- model benchmark (bench_model.py, when present) ------------------------------------------
if [ -f bench/bench_model.py ]; then
  step bench_model 150 "$PY" bench/bench_model.py --device cuda --out "$OUT"
  SUMMARY+=("bench/bench_model.py --device cuda|$(status $STEP_RC)|$STEP_S|model-cuda.json, .md")
else
  SUMMARY+=("bench/bench_model.py|absent|0|")
fi

# --- summary (last) --------------------------------------------------------------------------
TOTAL=$(($(date +%s) - START))
"$PY" - "$OUT" "$LOG" "$COMMIT" "$TOTAL" "${SUMMARY[@]}" >"$OUT/summary.md" 2>>"$LOG" <<'EOF'
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

out, log, commit, total, *steps = sys.argv[1:]
print(f"# GPU check: commit {commit}, {total} s in all\n")
print("| step | status | seconds | detail |\n|---|---|---|---|")
for s in steps:
    print("| " + " | ".join(s.split("|", 3)) + " |")

print("\n| test file | passed | failed | errors | skipped |\n|---|---|---|---|---|")
counts: dict[str, Counter] = defaultdict(Counter)
# "tests/f.py::t PASSED" (plain -v) or "[gw0] [ 5%] PASSED tests/f.py::t" (xdist -v).
words = "PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS"
plain = re.compile(rf"^(tests/\S+?\.py)::\S.* ({words})\b")
xdist = re.compile(rf"^\[gw\d+\] \[\s*\d+%\] ({words}) (tests/\S+?\.py)::")
for line in Path(log).read_text(errors="replace").splitlines():
    if m := plain.match(line):
        counts[m[1]][m[2]] += 1
    elif m := xdist.match(line):
        counts[m[2]][m[1]] += 1
for name, c in sorted(counts.items()):
    print(f"| {name} | {c['PASSED'] + c['XFAIL']} | {c['FAILED'] + c['XPASS']} | {c['ERROR']} "
          f"| {c['SKIPPED']} |")
if not counts:
    print("| (no test ran) | | | | |")

ops = Path(out) / "ops-cuda.json"
if ops.exists():
    result = json.loads(ops.read_text())
    copy = result["meta"].get("copy_gbps")
    print(f"\nDevice copy bandwidth: {copy:.0f} GB/s" if copy else "")
    print("\n| key ratio | measured | target |\n|---|---|---|")
    for k in result["ratios"]:
        unit = "%" if "% of copy" in k["name"] else "x"
        v = "not measured" if k["value"] is None else f"{k['value']:.3g}{unit}"
        print(f"| {k['name']} | {v} | {k['cmp']} {k['target']}{unit} |")
    bad = [r for r in result["rows"] if "error" in r]
    for r in bad[:10]:
        print(f"- bench error: {r['case']} {r['impl']} {r['mode']}: {r['error']}")
else:
    print("\n(no ops-cuda.json: the op benchmark did not finish)")
EOF
echo | tee -a "$LOG"
tee -a "$LOG" <"$OUT/summary.md"
echo "gpu_check: logs and results in $OUT"
((FAILED == 0))
