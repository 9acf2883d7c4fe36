#!/usr/bin/env bash
# The latent pipeline end to end, from a fresh Debian 12 machine: install what is missing, build the
# example programs with the release preset, then, in about 10 minutes of a 2-core machine's time,
# train the autoencoder (diffuse_train_autoencoder, 3 minutes; out/autoencoder/), encode the training
# images and train the U-Net on their latents (diffuse_train --autoencoder, 7 minutes; out/latent/),
# which samples, decodes and scores what it learned as the pixel run does.
# DIFFUSE_AUTOENCODER_ARGS and DIFFUSE_TRAIN_ARGS add options to the two programs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

examples=(diffuse_train_classifier diffuse_train_autoencoder diffuse_train diffuse_sample diffuse_evaluate)
cmake --preset release
cmake --build --preset release --parallel "$(nproc 2>/dev/null || echo 2)" --target "${examples[@]}"

bin=build/release/examples
data=/usr/share/datasets/fashion-mnist
mkdir -p out
run() { echo "+ $*" >&2; "$@"; }

if [[ ! -s out/classifier.safetensors ]]; then
    run "$bin/diffuse_train_classifier" --data-dir "$data" --out out/classifier.safetensors
fi
# shellcheck disable=SC2086  # the *_ARGS are lists of options
run "$bin/diffuse_train_autoencoder" --data-dir "$data" --out out/autoencoder --classifier out/classifier.safetensors \
    --minutes 3 ${DIFFUSE_AUTOENCODER_ARGS:-}
# shellcheck disable=SC2086
run "$bin/diffuse_train" --data-dir "$data" --out out/latent --classifier out/classifier.safetensors \
    --autoencoder out/autoencoder/autoencoder.safetensors --minutes 7 ${DIFFUSE_TRAIN_ARGS:-}

echo "diffuse: the latent pipeline's output:"
ls -l out/autoencoder/ out/latent/
echo
echo "diffuse: the autoencoder's reconstructions: out/autoencoder/reconstructions.png, its figures:"
echo "  out/autoencoder/metrics.json; the latent model's pictures: out/latent/latent_pipeline.png,"
echo "  out/latent/samples_by_class.png, out/latent/denoising.png, out/latent/inpainting.png; its scores:"
echo "  out/latent/metrics.json (more samples: $bin/diffuse_sample --checkpoint out/latent/checkpoint.safetensors)"
