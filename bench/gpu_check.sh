#!/usr/bin/env bash
# The prepared GPU check: the tests' cuda tier (the correctness of every Triton kernel), then
# bench/gpu_check.py's timings: whole Langevin steps against the autograd loop on cuDNN, a 4096-chain sample
# and the profile table, written to $OUT (or bench/gpu_out). Uses the machine's own torch and triton: no
# install, no network.
#
#     bench/gpu_check.sh                     # everything
#     bench/gpu_check.sh --quick             # fewer block shapes to compile
#     bench/gpu_check.sh --sections step     # one part
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >"$OUT/nvidia-smi.txt" 2>&1
cat "$OUT/nvidia-smi.txt"
# Triton's compiled kernels from an earlier run, when one was brought along (.gpu_cache/triton.tgz): only
# kernels whose source changed since are compiled again.
if [ -f .gpu_cache/triton.tgz ]; then mkdir -p ~/.triton && tar xzf .gpu_cache/triton.tgz -C ~/.triton; fi
# The test suite's GPU tier first (tests/test_cuda.py): the compiled kernels against float64 references in
# IEEE fp32, TF32 and bf16, the whole B(I), a layer-1 output past 2^31 elements (skipped with under 12 GiB
# free), chains that repeat with the seed and ignore the chunk size, the in-kernel noise.
TRITON_INTERPRET=0 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_cuda.log"
tests_status=${PIPESTATUS[0]}
# GPU_CHECK_SECONDS stops the check after that long, still saving what it found (0: no limit).
timeout "${GPU_CHECK_SECONDS:-0}" python3 bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
tar czf "$OUT/triton.tgz" -C ~/.triton cache 2>/dev/null
# A failed test fails the check as a failed section does (the timings still ran).
exit $((status != 0 ? status : tests_status))
