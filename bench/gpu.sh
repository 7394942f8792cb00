#!/usr/bin/env bash
# One-shot GPU benchmark (issue 13): extraction and generation throughput of random-weight
# stand-ins built from the real configs of SmolLM2-135M, Gemma-2-2B and Llama-3.1-8B
# (bench/model_configs.json; the weights' values do not change speed), on cuda in bfloat16.
#
#   OUT=/some/dir bash bench/gpu.sh            # on the GPU machine, from the repository root
#   bash bench/gpu.sh --tiny                   # CPU smoke test of the same steps (tiny shapes)
#
# Needs python3 with torch, transformers, numpy, pandas, pyarrow (no sae-lens, gguf, datasets,
# no network, no model files): the scripts import only cgaps.config, cgaps.models (batching,
# HFBackend), cgaps.extract.stage/reference, cgaps.items.probes (none of which imports those at
# import time) and build a plain-torch TopK SAE. Results go to $OUT/gpu_bench.txt; every step
# has its own time limit, so one failure or hang costs that step only (total < 6 minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/cgaps-gpu-bench}"
mkdir -p "$OUT"
LOG="$OUT/gpu_bench.txt"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"

if [ "${1:-}" = "--tiny" ]; then
  DEV=(--device cpu --tiny); TINY=1
else
  DEV=(--device cuda --dtype bfloat16); TINY=0
fi
# per model: extraction items and rounds, generation prompts, and each step's time limit (s);
# the limits add up to 330 s, so the whole script ends within 6 minutes whatever happens
plan() {
  if [ "$TINY" = 1 ]; then echo "12 1 8 120"; return; fi
  case $1 in
    SmolLM2-135M) echo "512 2 256 45" ;;
    Gemma-2-2B) echo "384 1 256 55" ;;
    Llama-3.1-8B) echo "192 1 128 65" ;;
  esac
}
MODELS=(SmolLM2-135M Gemma-2-2B Llama-3.1-8B)
[ "$TINY" = 1 ] && MODELS=(SmolLM2-135M Gemma-2-2B)

step() {  # step NAME LIMIT_S COMMAND...: run, log, never stop the script
  local name=$1 limit=$2; shift 2
  echo "### $name" >>"$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "### $name: exit $? after $((SECONDS - t0)) s" >>"$LOG"
}

{
  echo "# cgaps GPU benchmark, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), '| transformers', transformers.__version__)"
} >"$LOG" 2>&1

for m in "${MODELS[@]}"; do
  read -r n_extract rounds n_gen limit <<<"$(plan "$m")"
  if [ "$TINY" = 1 ]; then sizes=(--max-tokens 64); gsizes=(--new-tokens 4 --batch-size 4); else sizes=(--batch-size 32); gsizes=(--new-tokens 64 --batch-size 64); fi
  step "extract $m" "$limit" "$PY" bench/extract.py --synthetic "$m" "${DEV[@]}" --items "$n_extract" --rounds "$rounds" "${sizes[@]}"
  step "generate $m" "$limit" "$PY" bench/generate.py --synthetic "$m" "${DEV[@]}" --items "$n_gen" "${gsizes[@]}"
done
echo "# done in $SECONDS s" >>"$LOG"
cat "$LOG"
