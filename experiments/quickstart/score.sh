#!/usr/bin/env bash
# FID of the quickstart's checkpoint with its old grid sampler and with the new one (experiments/quickstart/README.md):
# 360 samples against the 180 held-out digits, the same seed; the samples are kept next to each JSON.
# Usage: experiments/quickstart/score.sh CKPT OUT_DIR
set -euo pipefail
ckpt=$1 out=$2
mkdir -p "$out"
common=(--ckpt_path="$ckpt" --split=val --num_samples=360 --batch_size=360 --seed=0 --trainer.enable_progress_bar=false
        --sampler=ncsn_pl.core.samplers.AnnealedLangevin)
# the new grid: T = 10 per level, step_lr from NCSNv2's Technique 4 for the v1 schedule (gamma 1.668), denoised
[ -f "$out/als_T10_denoise.json" ] || python -m ncsn_pl fid "${common[@]}" --sampler.n_steps_each=10 \
  --sampler.step_lr=1.907e-5 --sampler.denoise=true --out="$out/als_T10_denoise.json"
# the old grid: the v1 paper's T = 100, step_lr 2e-5, no denoising (1,000 NFE)
[ -f "$out/als_T100.json" ] || python -m ncsn_pl fid "${common[@]}" --sampler.n_steps_each=100 \
  --sampler.step_lr=2e-5 --sampler.denoise=false --out="$out/als_T100.json"
