#!/usr/bin/env bash
# The recipe study (experiments/recipe/README.md): train NCSN v1 rules and NCSNv2 rules on Fashion-MNIST and on the
# digits at 16x16, two training seeds each, with a checkpoint every 500 steps; then score checkpoints with `fid`
# (500 samples, each rule's ~50-NFE FID sampler). Run from the repository root.
#   experiments/recipe/study.sh train            # the nine runs, PAR at a time, into $ROOT
#   experiments/recipe/study.sh score            # fid of the checkpoints at the points below
# The points are equal wall-clock times on 2 CPU cores: 5 and 10 minutes of training, at the rates measured alone
# (v1 rules 308 steps a minute, v2 rules 398, validation and EMA included; README), rounded to the 500-step
# checkpoints; sampling seed 0 at each, seed 1 at 10 minutes on training seed 0. The run without EMA warm-up stops at 3,000 steps.
# Settings (environment): ROOT (runs/recipe), STEPS_V1 (3000), STEPS_V2 (4000), PAR (parallel jobs, 1), NUM
# (samples per FID, 500), NAMES (the runs), EXTRA (more arguments for every command, e.g. --trainer.accelerator=cpu).
set -u
cd "$(dirname "$0")/../.."
ROOT=${ROOT:-runs/recipe} STEPS_V1=${STEPS_V1:-3000} STEPS_V2=${STEPS_V2:-4000} PAR=${PAR:-1} NUM=${NUM:-500}
EXTRA=${EXTRA:-}
POINTS_V1=${POINTS_V1:-"1500 3000"} POINTS1_V1=${POINTS1_V1:-"3000"}
POINTS_V2=${POINTS_V2:-"2000 4000"} POINTS1_V2=${POINTS1_V2:-"4000"}
mkdir -p "$ROOT"
export WANDB_MODE=disabled

# name: the base config and overlays of each run (seed 1 adds --seed_everything=1 --model.seed=1)
declare -A RUNS=(
  [fashion-v1]="configs/fashion_cpu30_v1.yaml experiments/recipe/v1.yaml"
  [fashion-v2]="configs/fashion_cpu30_v2.yaml experiments/recipe/v2.yaml"
  [fashion-v2nowarmup]="configs/fashion_cpu30_v2.yaml experiments/recipe/v2.yaml experiments/recipe/v2_no_warmup.yaml"
  [digits-v1]="configs/fashion_cpu30_v1.yaml experiments/recipe/v1.yaml experiments/recipe/digits16.yaml"
  [digits-v2]="configs/fashion_cpu30_v2.yaml experiments/recipe/v2.yaml experiments/recipe/digits16_v2.yaml"
)
NAMES=${NAMES:-"fashion-v1-s0 fashion-v1-s1 fashion-v2-s0 fashion-v2-s1 fashion-v2nowarmup-s0 digits-v1-s0 digits-v1-s1
       digits-v2-s0 digits-v2-s1"}

train_one() {  # name-seed
  local name=$1 run=${1%-s*} seed=${1##*-s} configs=() dir="$ROOT/$1" steps=$STEPS_V2
  case $run in *-v1) steps=$STEPS_V1 ;; *nowarmup) steps=$((STEPS_V2 < 3000 ? STEPS_V2 : 3000)) ;; esac
  for c in ${RUNS[$run]}; do configs+=(--config "$c"); done
  python -m ncsn_pl fit "${configs[@]}" --seed_everything="$seed" --model.seed="$seed" \
    --trainer.max_steps="$steps" --trainer.default_root_dir="$dir" \
    --trainer.logger="{class_path: ncsn_pl.training.RunLogger, init_args: {save_dir: $dir, name: ''}}" \
    $EXTRA >"$dir.log" 2>&1 && echo "trained $name" || echo "FAILED $name (see $dir.log)"
}

# each rule's FID sampler (about 50 NFE), as in the configs: v1 annealed Langevin T = 5 with Technique 4's step for
# v1's schedule (gamma 1.668); v2 consistent annealed sampling at one step per level, eta = 1 - gamma^-2 for the
# schedule of the data (Fashion: sigma 12.37, L = 52; digits: sigma 8.543, L = 49, from `auto`)
sampler() {
  case $1 in
    *-v1) echo "--sampler=ncsn_pl.core.samplers.AnnealedLangevin --sampler.n_steps_each=5 --sampler.step_lr=2.975e-5 --sampler.denoise=true" ;;
    fashion-v2*) echo "--sampler=ncsn_pl.core.samplers.ConsistentAnnealed --sampler.n_steps_each=1 --sampler.step_lr=2.437e-5 --sampler.denoise=true" ;;
    digits-v2*) echo "--sampler=ncsn_pl.core.samplers.ConsistentAnnealed --sampler.n_steps_each=1 --sampler.step_lr=2.452e-5 --sampler.denoise=true" ;;
  esac
}

# real images: Fashion's first 1,000 test images; the digits' first 1,000 training images (their held-out split
# has 180)
reals() { case $1 in fashion*) echo "--split=val --num_real=1000" ;; digits*) echo "--split=train --num_real=1000" ;; esac; }

score_one() {  # name-seed step sampling-seed
  local name=$1 step=$2 seed=$3 run=${1%-s*} ckpt out
  ckpt=$(ls "$ROOT/$name"/version_0/checkpoints/*-step="$step".ckpt 2>/dev/null | head -n 1)
  out="$ROOT/scores/${name}_step${step}_seed${seed}.json"
  [ -n "$ckpt" ] || { echo "no checkpoint $name step $step"; return; }
  [ -f "$out" ] && return
  python -m ncsn_pl fid --ckpt_path="$ckpt" $(reals "$run") --num_samples="$NUM" --batch_size=250 --seed="$seed" \
    $(sampler "$run") --trainer.enable_progress_bar=false --out="$out" $EXTRA >"${out%.json}.log" 2>&1 \
    && echo "scored $name $step seed $seed" || echo "FAILED fid $name $step seed $seed (see ${out%.json}.log)"
}

case ${1:-} in
  train)
    for name in $NAMES; do echo "$name"; done | xargs -P "$PAR" -I{} bash -c "$(declare -f train_one); $(declare -p RUNS); ROOT='$ROOT' STEPS_V1='$STEPS_V1' STEPS_V2='$STEPS_V2' EXTRA='$EXTRA' train_one {}"
    ;;
  score)
    mkdir -p "$ROOT/scores"
    jobs=()
    for name in $NAMES; do
      case $name in
        *nowarmup*) ;;
        *-v1-*) for step in $POINTS_V1; do jobs+=("$name $step 0"); done ;;
        *) for step in $POINTS_V2; do jobs+=("$name $step 0"); done ;;
      esac
      # the second sampling seed on training seed 0
      case $name in *-v1-s0) for step in $POINTS1_V1; do jobs+=("$name $step 1"); done ;;
                    *-v2-s0) for step in $POINTS1_V2; do jobs+=("$name $step 1"); done ;; esac
      # the EMA warm-up's before and after: 1,500 and 3,000 steps, sampling seed 1 too at 3,000
      case $name in fashion-v2-s0|fashion-v2nowarmup-s0) jobs+=("$name 1500 0" "$name 3000 0" "$name 3000 1") ;; esac
    done
    # the real statistics of each data set first (computed once, then cached), then the rest in parallel
    score_one fashion-v1-s0 "${POINTS_V1%% *}" 0; score_one digits-v1-s0 "${POINTS_V1%% *}" 0
    printf '%s\n' "${jobs[@]}" | sort -u | xargs -P "$PAR" -L 1 bash -c "$(declare -f score_one sampler reals); ROOT='$ROOT' NUM='$NUM' EXTRA='$EXTRA' score_one \$0 \$1 \$2"
    ;;
  *) echo "usage: $0 train|score" >&2; exit 2 ;;
esac
