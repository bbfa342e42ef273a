#!/usr/bin/env bash
# FID of one checkpoint's samples drawn in float32 and under bf16-mixed, with the same seeds (the sampler's state
# stays float32 under bf16-mixed; only the network body runs in bf16): 360 samples against the held-out split, the
# quickstart's grid sampler (annealed Langevin, T = 10, denoised: 101 NFE), sampling seeds 0 and 1.
# Usage: benchmarks/bf16_sampling_fid.sh CKPT OUT_DIR      (e.g. runs/quickstart/version_0/checkpoints/last.ckpt)
set -euo pipefail
ckpt=$1 out=$2
mkdir -p "$out"
for seed in 0 1; do
  for precision in 32-true bf16-mixed; do
    file="$out/seed${seed}_${precision}.json"
    [ -f "$file" ] || python -m ncsn_pl fid --ckpt_path="$ckpt" --split=val --num_samples=360 --batch_size=360 \
      --seed="$seed" --trainer.enable_progress_bar=false --trainer.precision="$precision" \
      --sampler=ncsn_pl.core.samplers.AnnealedLangevin --sampler.n_steps_each=10 --sampler.step_lr=1.907e-5 \
      --sampler.denoise=true --out="$file"
  done
done
# how far the bf16-mixed samples lie from the float32 ones (same seeds, same start and noise)
python - "$out" <<'PY'
import glob, json, sys
import numpy as np
out, rows = sys.argv[1], {}
for seed in (0, 1):
    x, y = (np.load(glob.glob(f"{out}/seed{seed}_{p}_samples/shards/*.npz")[0])["samples"].astype(np.float64)
            for p in ("32-true", "bf16-mixed"))
    fid = [json.load(open(f"{out}/seed{seed}_{p}.json"))["fid"] for p in ("32-true", "bf16-mixed")]
    rows[f"seed{seed}"] = {"fid_fp32": fid[0], "fid_bf16": fid[1], "mean_abs_difference": float(np.abs(x - y).mean()),
                           "max_abs_difference": float(np.abs(x - y).max()), "data_range": float(x.max() - x.min())}
print(json.dumps(rows, indent=2))
json.dump(rows, open(f"{out}/difference.json", "w"), indent=2)
PY
