#!/usr/bin/env bash
# CTest: Improved DDPM's objectives through the programs. diffuse_train with the hybrid loss, a learned
# variance and the loss-aware timestep sampler on a few hundred images (T = 20, so that every t's
# history fills within the run); its metrics state the objective and the bound; diffuse_sample draws
# with the learned variance and with a fixed one; diffuse_evaluate computes the bound with the tanh
# CDF; the refusals of a hybrid loss without a learned variance and of a learned DDPM variance for a
# fixed-variance model. Exit 77 (skip) when the data set is not installed.
#
#   improved_ddpm_end_to_end.sh <diffuse_train> <diffuse_sample> <diffuse_evaluate> <work dir>
set -euo pipefail
train=$1 sample=$2 evaluate=$3 work=$4
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work"
small=(--max-images 256 --test-images 100 --per-class 2 --unconditional 4 --sample-steps 5 --inpaint-steps 5
       --bpd-images 8 --bpd-stride 1)
"$train" --config tiny --steps 24 --batch-size 16 --timesteps 20 --loss hybrid --variance learned_range \
    --timestep-sampler loss-aware --classifier-epochs 1 --log-seconds 0 --out "$work/hybrid" "${small[@]}" \
    > "$work/hybrid.log"
for key in '"loss": "hybrid"' '"variance": "learned_range"' '"timestep_sampler": "loss-aware"' '"bits_per_dim"'; do
    grep -qF "$key" "$work/hybrid/metrics.json" || { echo "metrics.json has no $key"; exit 1; }
done
"$sample" --checkpoint "$work/hybrid/checkpoint.safetensors" --classes 1 --count 2 --sampler ddpm --steps 5 \
    --out "$work/learned.png" --npy "$work/learned.npy"
"$sample" --checkpoint "$work/hybrid/checkpoint.safetensors" --classes 1 --count 2 --sampler ddpm --steps 5 \
    --ddpm-variance fixed_large --out "$work/large.png" --npy "$work/large.npy"
"$sample" --checkpoint "$work/hybrid/checkpoint.safetensors" --classes 1 --count 2 --sampler dpm++2m --steps 5 \
    --out "$work/dpm.png"
if cmp -s "$work/learned.npy" "$work/large.npy"; then
    echo "DDPM with the learned variance drew the same samples as with fixed_large"; exit 1
fi
"$evaluate" --checkpoint "$work/hybrid/checkpoint.safetensors" --out "$work/eval" --bpd-tanh-cdf "${small[@]:2}"
grep -qF 'tanh approximation' "$work/eval/metrics.json" || { echo "the bound does not say it used the tanh CDF"; exit 1; }

expect_failure "expected learned_range for the hybrid loss" \
    "$train" --config tiny --steps 2 --loss hybrid --no-eval --out "$work/bad"
"$train" --config tiny --steps 2 --batch-size 16 --max-images 64 --test-images 20 --no-eval --per-class 1 \
    --unconditional 1 --sample-steps 2 --inpaint-steps 0 --log-seconds 0 --out "$work/fixed" > "$work/fixed.log"
expect_failure "has a fixed variance" \
    "$sample" --checkpoint "$work/fixed/checkpoint.safetensors" --classes 1 --count 1 --sampler ddpm --steps 2 \
    --ddpm-variance learned_range --out "$work/bad.png"
echo "ok"
