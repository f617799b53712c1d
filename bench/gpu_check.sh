#!/usr/bin/env bash
# make gpu-check: prove the GPU path on a GPU machine without network, in one command (README, "Checking the GPU
# path"). Uses $PYTHON (default python3) and its CUDA torch as they are; installs what else the project needs from
# the wheels of `make gpu-wheels` into an overlay folder (.gpu-site); runs the CUDA tests (tests/cuda), then the GPU
# benchmark (bench/gpu_bench.py, JSON). Sized for about 5 minutes on one H200; the limits below end it within 9.
#
#   bash bench/gpu_check.sh [OUT_DIR]          # logs, test report and bench JSON in OUT_DIR (default runs/gpu_check)
#   bash bench/gpu_check.sh --cpu-rehearsal [OUT_DIR]   # without a GPU: the same steps on the CPU (tests with
#                                                       # DREAMER_CUDA_TESTS_DEVICE=cpu, bench --device cpu --tiny)
# Environment: PYTHON, GPU_WHEELS (default wheels), GPU_CHECK_TEST_TIMEOUT (s, default 330),
# GPU_CHECK_BENCH_BUDGET (s, default 120), GPU_CHECK_BENCH_TIMEOUT (s, default 180).
set -uo pipefail
cd "$(dirname "$0")/.."
REHEARSAL=0
if [ "${1:-}" = "--cpu-rehearsal" ]; then REHEARSAL=1; shift; fi
OUT_DIR=${1:-runs/gpu_check}
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-wheels}
SITE=.gpu-site
mkdir -p "$OUT_DIR"
t0=$(date +%s)
say() { echo "gpu-check: $*"; }

# 1. A Python with torch, and a GPU it can see.
"$PY" - "$REHEARSAL" <<'EOF' || exit 1
import sys
rehearsal = sys.argv[1] == "1"
try:
    import torch
except ImportError:
    sys.exit(f"gpu-check: {sys.executable} has no torch; set PYTHON to a Python that holds a CUDA build of PyTorch")
print(f"gpu-check: {sys.executable} (Python {sys.version.split()[0]}), torch {torch.__version__}, CUDA build {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu-check: GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
elif rehearsal:
    print("gpu-check: no GPU: CPU rehearsal of the same steps")
else:
    sys.exit("gpu-check: no GPU present: torch.cuda.is_available() is False (torch "
             f"{torch.__version__}, CUDA build {torch.version.cuda}); nothing to check. Run it on a machine with a "
             "CUDA GPU (bash bench/gpu_check.sh --cpu-rehearsal runs the same steps on the CPU)")
EOF

# 2. The project's other dependencies, offline, into the overlay.
"$PY" bench/gpu_env.py --wheels "$WHEELS" --target "$SITE" || exit 1
export PYTHONPATH="$PWD/$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
if [ "$REHEARSAL" = 1 ]; then
    export DREAMER_CUDA_TESTS_DEVICE=cpu
    BENCH_ARGS=(--device cpu --tiny)
else
    BENCH_ARGS=(--device cuda)
fi

# 3. The CUDA tests.
say "CUDA tests (log: $OUT_DIR/cuda_tests.log)"
# The compile tests last (the slowest): a run stopped by the timeout still reports everything else.
TESTS=($(ls tests/cuda/test_*.py | grep -v compile) tests/cuda/test_cuda_compile.py)
timeout "${GPU_CHECK_TEST_TIMEOUT:-330}" "$PY" -m pytest -p no:cacheprovider -v -m cuda --durations=0 \
    --junitxml "$OUT_DIR/cuda_tests.xml" "${TESTS[@]}" 2>&1 | tee "$OUT_DIR/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}

# 4. The GPU benchmark.
say "benchmark (JSON: $OUT_DIR/gpu_bench.json, log: $OUT_DIR/gpu_bench.log)"
timeout "${GPU_CHECK_BENCH_TIMEOUT:-180}" "$PY" bench/gpu_bench.py "${BENCH_ARGS[@]}" \
    --budget-s "${GPU_CHECK_BENCH_BUDGET:-120}" --out "$OUT_DIR/gpu_bench.json" 2> >(tee "$OUT_DIR/gpu_bench.log" >&2)
bench_rc=$?

# 5. Summary.
"$PY" - "$OUT_DIR/gpu_bench.json" <<'EOF'
import json, sys
from pathlib import Path
p = Path(sys.argv[1])
if not p.is_file():
    sys.exit(0)
r = json.loads(p.read_text())
def get(*keys):
    x = r
    for k in keys:
        x = x.get(k, {}) if isinstance(x, dict) else {}
    return x if x != {} else None
def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "n/a"
print(f"gpu-check: {r['device'].get('name')}: measured bf16 matmul peak {fmt(get('matmul_peak', 'peak_tflops'), '.0f')} TFLOP/s")
for size in ("small", "large"):
    t, i = get("dynamics_train", size) or {}, get("imagination", size) or {}
    print(f"gpu-check: dynamics {size} ({fmt(t.get('params', 0) / 1e6, '.0f')}M params): training "
          f"{fmt(t.get('latent_tokens_per_s'), ',.0f')} latent tokens/s, MFU {fmt(t.get('mfu'), '.1%')}; imagination "
          f"{fmt((i.get('kv_cache') or {}).get('env_frames_per_s'), ',.0f')} env frames/s "
          f"({fmt(i.get('env_frames_per_s_with_decode'), ',.0f')} with CV8x8x8 decode)")
tok = next(iter((r.get("tokenizer") or {}).values()), {})
print(f"gpu-check: tokenizer {tok.get('preset')}: encode {fmt((tok.get('encode') or {}).get('frames_per_s'), ',.0f')} "
      f"frames/s, decode {fmt((tok.get('decode') or {}).get('frames_per_s'), ',.0f')} frames/s at {tok.get('resolution')}²; "
      f"peak GPU memory {fmt(r.get('peak_memory_gib'), '.1f')} GiB")
EOF
say "tests exit $tests_rc, benchmark exit $bench_rc, $(( $(date +%s) - t0 )) s in all; files in $OUT_DIR"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
