#!/usr/bin/env bash
# Train the bi-encoder from a bundle on a lent GPU machine (docs/evaluation.md, "Training on a lent GPU").
# It runs there, in the repository root, with the bundle and var/wheels carried (bm25s: nlu imports it, and the
# machine has PyTorch, transformers, onnx and safetensors but not bm25s):
#   bash lab/training/on_gpu.sh var/bundle STEPS [more tune_encoder options]
# A file that comes back may be at most 16 MiB, so the weights (about 45 MB) come back in parts of 15 MiB; here:
#   cat OUT/model.safetensors.part-* > DIR/model.safetensors && cp OUT/config.json OUT/train_log.jsonl DIR/
#   .venv/bin/python -m lab.training.export_onnx DIR
set -euo pipefail
bundle=$1 steps=$2
shift 2
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site var/wheels/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run=/tmp/run
python3 -m lab.training.tune_encoder --bundle "$bundle" --out "$run" --steps "$steps" --device cuda "$@" 2>&1 \
  | tr '\r' '\n' | tee "$OUT/log.txt"
split -b 15M "$run/model.safetensors" "$OUT/model.safetensors.part-"
cp "$run/config.json" "$run/train_log.jsonl" "$OUT/"
