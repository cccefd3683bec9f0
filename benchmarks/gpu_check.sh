#!/usr/bin/env bash
# GPU check of asymre-jax on a machine with one NVIDIA GPU and jax[cuda] already installed:
# train-step MFU (XLA and cuDNN attention) and decode tokens/s of a Qwen2.5-0.5B-shaped model,
# one RL step, LoRA RL on SmolLM2-135M (synchronous vs pipelined; skipped when
# `python -m llm.models.fetch smollm2-135m-instruct` was not run) and the GPU-relevant tests,
# into one JSON file and a one-screen summary (benchmarks/gpu_check.py says what each measures).
#
#   benchmarks/gpu_check.sh [OUT.json] [gpu_check.py flags]   # default $OUT/gpu_check.json
#   GPU_CHECK_CPU_SMOKE=1 benchmarks/gpu_check.sh out.json     # toy sizes on the CPU
#
# Nothing is installed or downloaded: the project is imported from this working tree.
# Without a GPU it exits with status 2 and one "error:" line within seconds.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"

if [[ "${GPU_CHECK_CPU_SMOKE:-0}" != 1 ]]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "error: no NVIDIA GPU found (nvidia-smi missing or failing); set GPU_CHECK_CPU_SMOKE=1 for the CPU smoke run" >&2
    exit 2
  fi
  unset JAX_PLATFORMS  # a leftover JAX_PLATFORMS=cpu would hide the GPU
fi
command -v "$PYTHON" >/dev/null 2>&1 || { echo "error: $PYTHON not found" >&2; exit 2; }
"$PYTHON" -c "import jax, flax, optax" 2>/dev/null \
  || { echo "error: jax, flax and optax must be importable by $PYTHON" >&2; exit 2; }

# 8 minutes at most, whatever happens inside (the Python side also budgets its sections).
timeout --signal=TERM --kill-after=10 480 "$PYTHON" "$ROOT/benchmarks/gpu_check.py" "$@"
