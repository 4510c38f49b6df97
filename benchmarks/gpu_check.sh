#!/usr/bin/env bash
# The prepared GPU check, for a GPU machine whose image has CUDA torch but not emofeat's other
# pins and no registry access (docs/how-to/gpu.md). Once, on a machine that reaches PyPI:
#     echo /.whl/ >> .git/info/exclude; benchmarks/gpu_wheels.sh .whl
# then run this with `.whl` brought along. It writes everything under ${OUT:-gpu-out}:
#   cuda-tests.txt   - tests/test_cuda.py alone, first (they never ran before a GPU was lent)
#   tests.txt        - the whole suite on the GPU machine (CUDA tests included)
#   bench-large.json - extract_bench --device cuda --size large (XLSR large, random weights)
#   nvidia-smi.txt   - the card
# Each step's exit status is kept; the script fails if any step failed.
set -uo pipefail
OUT=${OUT:-gpu-out}
CLIPS=${CLIPS:-300}
REPEATS=${REPEATS:-3}
# One device call runs at most 10 minutes: the steps' limits add up to less.
SUITE_S=${SUITE_S:-280}
BENCH_S=${BENCH_S:-180}
WORKERS=${WORKERS:-8}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target .site .whl/*.whl || exit 3
export PYTHONPATH=$PWD/.site:$PWD
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
status=0
# The suite: EMOFEAT_DEVICE=cpu (tests/conftest.py) keeps CPU-referenced tests on the CPU;
# tests/test_cuda.py runs on the card.
timeout 90 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py > "$OUT/cuda-tests.txt" 2>&1 || status=1
tail -15 "$OUT/cuda-tests.txt"
# Two threads per worker: 8 workers of 16 threads each on 16 cores ran 5x slower (2026-12-04).
OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 timeout "$SUITE_S" python3 -m pytest -q -p no:cacheprovider -n "$WORKERS" tests > "$OUT/tests.txt" 2>&1 || status=1
tail -5 "$OUT/tests.txt"
timeout "$BENCH_S" python3 benchmarks/extract_bench.py --device cuda --size large --clips "$CLIPS" --repeats "$REPEATS" \
  --out "$OUT/bench" > "$OUT/bench-large.log" 2>&1 || status=1
tail -1 "$OUT/bench-large.log" > "$OUT/bench-large.json"
rm -rf "$OUT/bench"  # wavs, a 1.2 GB model and stores: not worth bringing back
grep -v "it/s\|utt/s" "$OUT/bench-large.log" | tail -45
exit $status
