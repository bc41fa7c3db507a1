#!/usr/bin/env bash
# Every check that needs a real NVIDIA GPU, in one go, for a machine where GPU time is scarce.
#
#   bash benchmarks/gpu_checks.sh RESULTS_DIR [--quick]
#
# 1. what the machine is (nvidia-smi, Python, CuPy, Numba), in RESULTS_DIR/env.txt;
# 2. the GPU tests on the device: tests/gpu and the gpu executor's tests, the simulator-only
#    ones left out (they run in CI), in RESULTS_DIR/pytest.log and pytest.xml;
# 3. benchmarks/gpu.py: device BLAKE3 against the CPU `blake3` package for random sizes up to
#    1 GiB (bit-identical digests), device hashing throughput against the device's own copy
#    bandwidth (with --tune: other kernel shapes), and the chain of GPU steps against host round
#    trips; in RESULTS_DIR/gpu.log and gpu.jsonl.
#
# Run it with the repository root as the working directory; the mlflowkit in the tree is used
# (PYTHONPATH), so nothing has to be installed but its dependencies. Exits non-zero if any part
# failed; every part runs even when an earlier one failed. TESTS_TIMEOUT and BENCH_TIMEOUT
# (seconds, default 900 each) bound the two long parts.
set -u
results=${1:?usage: bash benchmarks/gpu_checks.sh RESULTS_DIR [--quick]}
quick=${2:-}
mkdir -p "$results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0

{
    date -u
    nvidia-smi || echo "nvidia-smi: not found"
    "$py" - <<'EOF'
import platform
print("python", platform.python_version())
for name in ("numpy", "cupy", "numba", "numba_cuda", "blake3"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError as exc:
        print(name, "missing:", exc)
from numba import cuda
print("numba.cuda.is_available():", cuda.is_available())
if cuda.is_available():
    device = cuda.get_current_device()
    print("device:", device.name, "compute capability", device.compute_capability)
EOF
} >"$results/env.txt" 2>&1
cat "$results/env.txt"

echo "== tests on the device =="
timeout "${TESTS_TIMEOUT:-900}" "$py" -m pytest tests/gpu tests/executors/test_gpu_executor.py -m "not slow" \
    -p no:cacheprovider -rA -q --timeout 300 --junitxml "$results/pytest.xml" \
    >"$results/pytest.log" 2>&1 || status=1
tail -n 40 "$results/pytest.log"

echo "== benchmarks/gpu.py =="
bench_args=(--json "$results/gpu.jsonl")
if [ "$quick" = "--quick" ]; then bench_args+=(--quick); else bench_args+=(--tune); fi
timeout "${BENCH_TIMEOUT:-900}" "$py" benchmarks/gpu.py "${bench_args[@]}" >"$results/gpu.log" 2>&1 || status=1
cat "$results/gpu.log"

echo "gpu_checks: exit $status"
exit $status
