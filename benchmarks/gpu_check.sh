#!/usr/bin/env bash
# The one GPU check (TensorFlow-free; under 8 minutes on one H100/H200). Prints the card, then
#  1. model-only train-step throughput and MFU of WRN-50-2 at batch 128, bfloat16, 224x224, for
#     the plain backbone and the paper / released / attend_rectify attention (train_throughput.py),
#  2. train.py end to end on the synthetic dogs-shaped dataset with the device feed (WRN-50-2 +
#     attend_rectify, batch 128, bfloat16), its images/s and its ratio to the same step alone.
#
# The lent machine has jax, flax, optax, orbax, tensorboard and matplotlib but not ml_collections:
# before calling the device tool, here in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl ml_collections==1.1.0
# then run (carry [".whl"]):  bash benchmarks/gpu_check.sh 2>&1 | tee $OUT/gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ! python3 -c "import ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
date -u

timeout 300 python3 benchmarks/train_throughput.py --batch 128 --dtype bfloat16 --feeds device \
  --variants plain,paper,released,attend_rectify --steps 20 --windows 3

timeout 240 python3 benchmarks/end_to_end.py --config=configs/synthetic.py --feeds device --steps 120 \
  --log_every 20 --set model.dtype=bfloat16 --set batch_size=128 --set model.bn_group_size=32
