#!/usr/bin/env bash
# The prepared GPU check (issue 11), for a lent GPU machine whose image has CUDA torch but not
# emofeat's pins (see ../shared/gpu/README.md). Once, on the development machine:
#     echo /.whl/ >> .git/info/exclude; ../shared/gpu/fetch-wheels.sh .whl
# then run this with `.whl` carried along. It writes everything under ${OUT:-gpu-out}:
#   tests.txt        - the whole suite on the GPU machine (CUDA tests included)
#   bench-large.json - extract_bench --device cuda --size large (XLSR large, random weights)
#   nvidia-smi.txt   - the card
# Each step's exit status is kept; the script fails if any step failed.
set -uo pipefail
OUT=${OUT:-gpu-out}
CLIPS=${CLIPS:-1500}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target .site .whl/*.whl || exit 3
export PYTHONPATH=$PWD/.site:$PWD
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
status=0
# The suite: EMOFEAT_DEVICE=cpu (tests/conftest.py) keeps CPU-referenced tests on the CPU;
# tests/test_cuda.py runs on the card.
timeout 420 python3 -m pytest -q -p no:cacheprovider -n 4 tests > "$OUT/tests.txt" 2>&1 || status=1
tail -5 "$OUT/tests.txt"
timeout 420 python3 benchmarks/extract_bench.py --device cuda --size large --clips "$CLIPS" \
  --out "$OUT/bench" > "$OUT/bench-large.log" 2>&1 || status=1
tail -1 "$OUT/bench-large.log" > "$OUT/bench-large.json"
rm -rf "$OUT/bench"  # wavs, a 1.2 GB model and stores: not worth bringing back
grep -v "it/s\|utt/s" "$OUT/bench-large.log" | tail -45
exit $status
