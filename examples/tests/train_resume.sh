#!/usr/bin/env bash
# CTest: N steps of diffuse_train straight, against N/2 steps, then --resume for the other N/2, must
# write the same checkpoint, byte for byte (weights, EMA, Adam's moments, counters, generator and the
# data order's position). Exit 77 (skip) when the data set is not installed.
#
#   train_resume.sh <diffuse_train> <work dir> [N [more diffuse_train options, e.g. --prompts]]
set -euo pipefail
train=$1 work=$2 n=${3:-8}
shift $(($# < 3 ? $# : 3))
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work"
# 200 images at batch 16: the resumed half crosses an epoch boundary, so the data order is resumed too
run=("$train" --config tiny --max-images 200 --test-images 50 --batch-size 16 --no-eval --per-class 1
     --unconditional 1 --sample-steps 2 --inpaint-steps 4 --checkpoint-every 0 --log-seconds 0 "$@")
"${run[@]}" --steps $((2 * n)) --out "$work/straight" > "$work/straight.log"
"${run[@]}" --steps "$n" --out "$work/resumed" > "$work/first_half.log"
cp "$work/resumed/checkpoint.safetensors" "$work/half.safetensors"
"${run[@]}" --steps $((2 * n)) --resume "$work/half.safetensors" --out "$work/resumed" > "$work/second_half.log"
if cmp "$work/straight/checkpoint.safetensors" "$work/resumed/checkpoint.safetensors"; then
    echo "ok: the resumed run's checkpoint is identical to the straight run's"
else
    echo "the resumed run's checkpoint differs from the straight run's"
    exit 1
fi
