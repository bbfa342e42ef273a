#!/usr/bin/env bash
# Score the training-curve checkpoints of experiments/fashion/README.md with `fid` (1,000 samples against the first
# 1,000 test images, the config's FID sampler, KID, precision/recall; the samples are kept) and report their mode
# coverage. Usage: experiments/fashion/score_curve.sh v1|v2 STEP|last [RUN_DIR] [SEED]
# RUN_DIR: the run's version folder (default runs/fashion_v1|v2_alone/version_0, the curve.yaml runs);
# SEED: the sample set's seed (default 0; another seed writes <run>_step<STEP>_seed<SEED>.json).
set -euo pipefail
run=$1 step=$2 dir=${3:-runs/fashion_$1_alone/version_0} seed=${4:-0}
out=experiments/fashion/curve
name=${run}_step$step$([ "$seed" = 0 ] || echo "_seed$seed")
mkdir -p "$out"
if [ "$step" = last ]; then ckpt=$dir/checkpoints/last.ckpt; else ckpt=$(ls "$dir"/checkpoints/*step="$step".ckpt | head -n 1); fi
if [ "$run" = v1 ]; then
  sampler=(--sampler=ncsn_pl.core.samplers.AnnealedLangevin --sampler.n_steps_each=5 --sampler.step_lr=2.975e-5
           --sampler.denoise=true)
else
  sampler=(--sampler=ncsn_pl.core.samplers.ConsistentAnnealed --sampler.n_steps_each=1 --sampler.step_lr=2.437e-5
           --sampler.denoise=true)
fi
python -m ncsn_pl fid --ckpt_path="$ckpt" --split=val --num_real=1000 --num_samples=1000 --batch_size=250 --seed="$seed" \
  "${sampler[@]}" --quality.kid=true --quality.precision_recall=true --trainer.enable_progress_bar=false \
  --out="$out/$name.json"
python experiments/fashion/coverage.py --classifier experiments/fashion/classifier_16px.pt \
  --samples "$out/${name}_samples" --fid "$out/$name.json" --label "$run rules" \
  --out "$out/${name}_coverage.json"
