#!/usr/bin/env bash
# From a fresh Debian 12 machine to the examples' output: install what is missing, build the example
# programs with the release preset, run each one, writing what it produces under out/. The main job:
# the evaluation classifier (once; out/classifier.safetensors), then diffuse_train for its default
# budget of about 10 minutes, which writes its pictures and metrics.json into out/train/.
# DIFFUSE_TRAIN_ARGS adds options to diffuse_train (e.g. DIFFUSE_TRAIN_ARGS="--minutes 30").
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

examples=(diffuse_schedule diffuse_noising diffuse_train_classifier diffuse_train diffuse_sample diffuse_evaluate)
cmake --preset release
cmake --build --preset release --parallel "$(nproc 2>/dev/null || echo 2)" --target "${examples[@]}"

bin=build/release/examples
data=/usr/share/datasets/fashion-mnist
mkdir -p out

# Echo each command to stderr, so that stdout can be redirected into the output file.
run() { echo "+ $*" >&2; "$@"; }

run "$bin/diffuse_schedule" --schedule linear --timesteps 1000 > out/schedule_linear.csv
run "$bin/diffuse_schedule" --schedule cosine --timesteps 1000 > out/schedule_cosine.csv
run gnuplot -e "linear='out/schedule_linear.csv'; cosine='out/schedule_cosine.csv'; out='out/alphas_cumprod.png'" \
    examples/plots/alphas_cumprod.gp
run "$bin/diffuse_noising" --data-dir "$data" --index 0 --seed 0 --out out/noising.png

# The main job. The classifier that scores the samples is trained once and kept (a few minutes).
if [[ ! -s out/classifier.safetensors ]]; then
    run "$bin/diffuse_train_classifier" --data-dir "$data" --out out/classifier.safetensors
fi
# shellcheck disable=SC2086  # DIFFUSE_TRAIN_ARGS is a list of options
run "$bin/diffuse_train" --data-dir "$data" --out out/train --classifier out/classifier.safetensors \
    ${DIFFUSE_TRAIN_ARGS:-}

echo "diffuse: example output in out/:"
ls -l out/ out/train/
echo
echo "diffuse: the trained model's pictures: out/train/samples_by_class.png (one row per class),"
echo "  out/train/samples_unconditional.png, out/train/denoising.png, out/train/inpainting.png, out/train/loss.png;"
echo "  its scores: out/train/metrics.json; its checkpoint: out/train/checkpoint.safetensors"
echo "  (more samples: $bin/diffuse_sample --checkpoint out/train/checkpoint.safetensors --help)"
