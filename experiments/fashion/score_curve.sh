#!/usr/bin/env bash
# Score the training-curve checkpoints of experiments/fashion/README.md with `fid` (1,000 samples against the first
# 1,000 test images, the config's FID sampler, KID, precision/recall; the samples are kept) and report their mode
# coverage. Usage: experiments/fashion/score_curve.sh v1|v2 STEP   (after the curve_v1/v2.yaml runs have written it)
set -euo pipefail
run=$1 step=$2
out=experiments/fashion/curve
mkdir -p "$out"
ckpt=$(ls runs/fashion_curve_"$run"/version_0/checkpoints/*step="$step".ckpt | head -n 1)
if [ "$run" = v1 ]; then
  sampler=(--sampler=ncsn_pl.core.samplers.AnnealedLangevin --sampler.n_steps_each=5 --sampler.step_lr=2.975e-5
           --sampler.denoise=true)
else
  sampler=(--sampler=ncsn_pl.core.samplers.AnnealedLangevin --sampler.n_steps_each=1 --sampler.step_lr=2.436e-5
           --sampler.denoise=true)
fi
python -m ncsn_pl fid --ckpt_path="$ckpt" --split=val --num_real=1000 --num_samples=1000 --batch_size=250 --seed=0 \
  "${sampler[@]}" --quality.kid=true --quality.precision_recall=true --trainer.enable_progress_bar=false \
  --out="$out/${run}_step$step.json"
python experiments/fashion/coverage.py --classifier experiments/fashion/classifier_16px.pt \
  --samples "$out/${run}_step${step}_samples" --fid "$out/${run}_step$step.json" --label "$run rules" \
  --out "$out/${run}_step${step}_coverage.json"
