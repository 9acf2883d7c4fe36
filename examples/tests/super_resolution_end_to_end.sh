#!/usr/bin/env bash
# CTest: a short end-to-end run of the super-resolution model (diffuse_train --super-resolution 7) on a
# few hundred Fashion-MNIST images with the tiny U-Net, which must write superres.png and the scores
# of bicubic and diffusion upsampling; diffuse_evaluate on its checkpoint; and the refusals: a side
# 28 is not a multiple of, --super-resolution with --prompts or --autoencoder, diffuse_sample on a
# super-resolution checkpoint. Exit 77 (CTest's SKIP_RETURN_CODE) when the data set is not installed.
#
#   super_resolution_end_to_end.sh <diffuse_train> <diffuse_sample> <diffuse_evaluate> <work dir>
set -euo pipefail
train=$1 sample=$2 evaluate=$3 work=$4
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work"
"$train" --super-resolution 7 --config tiny --steps 6 --batch-size 16 --checkpoint-every 3 --classifier-epochs 1 \
    --log-seconds 0 --max-images 256 --test-images 100 --sr-images 40 --sample-steps 4 --out "$work/train" > "$work/train.log"
for f in checkpoint.safetensors loss.csv superres.png metrics.json; do
    [[ -s $work/train/$f ]] || { echo "missing or empty: $work/train/$f"; exit 1; }
done
for key in super_resolution bicubic diffusion originals psnr_db consistency_mse classifier_accuracy frechet_distance; do
    grep -q "\"$key\"" "$work/train/metrics.json" || { echo "metrics.json has no $key"; exit 1; }
done
grep -q "super-resolution from 7x7" "$work/train.log" || { echo "diffuse_train did not say it trains super-resolution"; exit 1; }
grep -q "^bicubic .* dB" "$work/train.log" || { echo "diffuse_train printed no scores"; cat "$work/train.log"; exit 1; }

ckpt=$work/train/checkpoint.safetensors
"$evaluate" --checkpoint "$ckpt" --out "$work/eval" --test-images 30 --sr-images 20 --sample-steps 3 > "$work/eval.log"
[[ -s $work/eval/superres.png ]] || { echo "diffuse_evaluate wrote no superres.png"; exit 1; }
grep -q '"test_images": 20' "$work/eval/metrics.json" || { echo "diffuse_evaluate did not upscale 20 images"; exit 1; }

expect_failure '--super-resolution = 8' "$train" --super-resolution 8 --config tiny --steps 1 --no-eval --out "$work/x"
expect_failure '--super-resolution with --prompts' "$train" --super-resolution 7 --prompts --steps 1 --no-eval --out "$work/x"
expect_failure '--super-resolution with --autoencoder' "$train" --super-resolution 7 --autoencoder "$ckpt" --steps 1 --no-eval --out "$work/x"
expect_failure 'diffuse_evaluate' "$sample" --checkpoint "$ckpt" --steps 2
echo "ok"
