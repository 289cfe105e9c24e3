#!/usr/bin/env bash
# The GPU check, for any Linux machine with an NVIDIA GPU and CUDA-enabled torch (docs/gpu.md):
#   installs what the machine lacks from wheels in .whl/ (git-ignored) when that folder exists, trains a
#   few hundred AMP steps of inception_resnet_v2 at 512 px on synthetic APTOS, measures loader-bound vs
#   compute-bound images/s and the share of the GPU's peak FLOP/s the step reaches, exports ONNX, runs it with
#   the CUDA provider when onnxruntime has one (fp32, fp32 + IO binding, fp16 + IO binding vs torch fp32
#   and AMP: parity and images/s), and prints a short table.
#
#   bash benchmarks/gpu_check.sh                  # the check (extra flags go to gpu_check.py)
#   bash benchmarks/gpu_check.sh --smoke          # the same code on a tiny CPU model, in seconds
#   bash benchmarks/gpu_check.sh --fetch-wheels   # on a machine with internet: albumentations and its small
#                                                 # dependencies for Python 3.12 into .whl/, for an offline GPU box
# Where the installed onnxruntime has no CUDA provider, the ONNX rows say CPUExecutionProvider and
# parity is checked on the CPU with a small batch.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p .whl
  for pkg in albumentations==2.0.8 albucore==0.0.24 stringzilla simsimd pydantic pydantic-core \
             annotated-types typing-inspection segmentation-models-pytorch==0.6.0; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$pkg"
  done
  du -sh .whl
  exit 0
fi

export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
python3 benchmarks/gpu_check.py "$@"
