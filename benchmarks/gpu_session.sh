#!/usr/bin/env bash
# The GPU checks and figures in one command, for a machine with one CUDA GPU:
#
#     OUT=results bash benchmarks/gpu_session.sh
#
# 1. the tests that need a CUDA device (CUDA graph replay equals eager encoding);
# 2. python -m benchmarks.encode on a BERT-base-sized model in bf16 with CUDA graphs
#    (project, raw forward and sentence-transformers in the same run);
# 3. the same without CUDA graphs (project and raw forward in the same run);
# 4. python -m benchmarks.stair_gpu: STAIR image encoding against the image tower alone, one training step.
# Results: $OUT/*.json and $OUT/*.log. Wheels in .whl/ (pytest, ...) are installed first when present;
# LSR_TOKENIZER names a tokenizer directory for the random model when SPLADE-tiny is not installed.
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --find-links .whl .whl/*.whl >"$OUT/pip.log" 2>&1 || true
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/env.txt" 2>&1
python3 -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)" \
    >>"$OUT/env.txt" 2>&1
TOK=()
if [ -n "${LSR_TOKENIZER:-}" ]; then TOK=(--tokenizer "$LSR_TOKENIZER"); fi
DOCS=${DOCS:-32768}
DEVICE=${DEVICE:-cuda}           # DEVICE=cpu MODEL=bert-tiny-random DOCS=256 STAIR_ARGS=--tiny: a quick dry run
MODEL=${MODEL:-bert-base-random}
read -r -a STAIR_EXTRA <<<"${STAIR_ARGS:-}"

timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_graphs.py \
    "tests/test_splade.py::test_cuda_graphs_give_the_eager_vectors" >"$OUT/pytest_gpu.log" 2>&1
echo "pytest exit $?" >>"$OUT/pytest_gpu.log"

python3 -m benchmarks.encode --device "$DEVICE" --model "$MODEL" "${TOK[@]}" --docs "$DOCS" --repeats 3 \
    --breakdown --check 256 --cuda-graphs --json "$OUT/encode_gpu_graphs.json" >"$OUT/encode_gpu_graphs.log" 2>&1
python3 -m benchmarks.encode --device "$DEVICE" --model "$MODEL" "${TOK[@]}" --docs "$DOCS" --repeats 3 \
    --no-st --json "$OUT/encode_gpu_eager.json" >"$OUT/encode_gpu_eager.log" 2>&1
python3 -m benchmarks.stair_gpu --device "$DEVICE" "${STAIR_EXTRA[@]}" --json "$OUT/stair_gpu.json" >"$OUT/stair_gpu.log" 2>&1
tail -n 12 "$OUT"/pytest_gpu.log "$OUT"/encode_gpu_graphs.log "$OUT"/encode_gpu_eager.log "$OUT"/stair_gpu.log
