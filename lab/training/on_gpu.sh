#!/usr/bin/env bash
# Train from a bundle on a lent GPU machine (docs/evaluation.md, "Training on a lent GPU"): the bi-encoder
# (tune_encoder) or the cross-encoder (train).  It runs there, in the repository root, with the bundle and
# var/wheels carried (bm25s: nlu imports it, and the machine has PyTorch, transformers, onnx and safetensors but
# not bm25s):
#   bash lab/training/on_gpu.sh tune_encoder var/bundle --steps 3000 [more options]
#   bash lab/training/on_gpu.sh train var/ce-bundle --minutes 6 [more options]
# A file that comes back may be at most 16 MiB, so the weights (about 45 MB) come back in parts of 15 MiB; here:
#   cat OUT/model.safetensors.part-* > DIR/model.safetensors && cp OUT/config.json OUT/train_log.jsonl DIR/
set -euo pipefail
trainer=$1 bundle=$2
shift 2
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site var/wheels/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run=/tmp/run
python3 -m "lab.training.$trainer" --bundle "$bundle" --out "$run" --device cuda "$@" 2>&1 | tr '\r' '\n' \
  | tee "$OUT/log.txt"
split -b 15M "$run/model.safetensors" "$OUT/model.safetensors.part-"
cp "$run/config.json" "$run/train_log.jsonl" "$OUT/"
