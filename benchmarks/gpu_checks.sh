#!/usr/bin/env bash
# The GPU checks in one pass, for a CUDA machine lent for a few minutes (docs/performance.md, "GPU"): the CUDA
# test, the training step's throughput for vit_l14 (bf16, bf16 + compile, fp32, reference-style), the main job and
# its evaluation on the GPU (first, then with the controls cached), then the reference experiment for up to 300
# steps with what time is left. Each step gets its own time limit within BUDGET seconds, its log in OUT, and a line
# in OUT/summary.txt (seven files: the run folders go to RUNS); a failed or skipped step does not stop the others.
#
#     BUDGET=520 OUT=gpu_checks RUNS=/tmp/gpu_runs bash benchmarks/gpu_checks.sh
set -u
PY=${PYTHON:-python3}
OUT=$(mkdir -p "${OUT:-gpu_checks}" && cd "${OUT:-gpu_checks}" && pwd)
RUNS=$(mkdir -p "${RUNS:-$OUT}" && cd "${RUNS:-$OUT}" && pwd)
end=$(( $(date +%s) + ${BUDGET:-520} ))
export PYTHONUNBUFFERED=1 WANDB_MODE=offline

step() {  # step NAME LIMIT COMMAND...: run COMMAND for at most LIMIT seconds (fewer if the budget is ending)
  local name=$1 limit=$2 left=$(( end - $(date +%s) )); shift 2
  (( left < limit )) && limit=$left
  if (( limit < 20 )); then echo "== $name: skipped (budget spent)" | tee -a "$OUT/summary.txt"; return; fi
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  tail -25 "$OUT/$name.log"
}

nvidia-smi -L | tee "$OUT/summary.txt"
$PY -c "import sys, torch, lightning; print(sys.version.split()[0], 'torch', torch.__version__, 'lightning',
lightning.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/summary.txt"
step gpu_test 120 $PY -m pytest -q -p no:cacheprovider -o addopts=-ra tests/test_speed_options.py -m gpu
step throughput 200 $PY benchmarks/train_throughput.py --model vit_l14 --batch-size 64 --steps 10 --warmup 3 \
    --variants bf16,bf16-compile,eager,reference
run=$RUNS/main_job
step train_default 110 $PY -m physiotouch.train trainer=gpu "hydra.run.dir=$run"
ckpt=$(ls "$run"/checkpoints/best-*.ckpt 2>/dev/null | head -1)
if [ -n "$ckpt" ]; then
  step evaluate_first 90 $PY -m physiotouch.evaluate "ckpt_path=$ckpt"
  step evaluate_cached 45 $PY -m physiotouch.evaluate "ckpt_path=$ckpt"
fi
step vit_l14_300_steps 400 $PY -m physiotouch.train experiment=reference_balanced model=vit_l14 trainer=gpu \
    trainer.max_steps=300 "hydra.run.dir=$RUNS/vit_l14"
cat "$OUT/summary.txt"
