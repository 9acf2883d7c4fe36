#!/usr/bin/env bash
# Super-resolution end to end, from a fresh Debian 12 machine: install what is missing, build the
# example programs with the release preset, then train a U-Net told each image's 7x7 area average
# bicubic-upsampled back to 28x28 (diffuse_train --super-resolution 7, the default 10 minutes;
# out/superres/), which upscales 1000 test images and writes superres.png (rows: low resolution,
# bicubic, diffusion, original) and their PSNR, classifier accuracy and Frechet distance against bicubic
# upsampling and the originals. DIFFUSE_TRAIN_ARGS adds options (--super-resolution 14 for 2x).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

examples=(diffuse_train_classifier diffuse_train diffuse_evaluate)
cmake --preset release
cmake --build --preset release --parallel "$(nproc 2>/dev/null || echo 2)" --target "${examples[@]}"

bin=build/release/examples
data=/usr/share/datasets/fashion-mnist
mkdir -p out
run() { echo "+ $*" >&2; "$@"; }

if [[ ! -s out/classifier.safetensors ]]; then
    run "$bin/diffuse_train_classifier" --data-dir "$data" --out out/classifier.safetensors
fi
# shellcheck disable=SC2086  # DIFFUSE_TRAIN_ARGS is a list of options
run "$bin/diffuse_train" --super-resolution 7 --data-dir "$data" --out out/superres \
    --classifier out/classifier.safetensors ${DIFFUSE_TRAIN_ARGS:-}

echo "diffuse: the super-resolution model's output:"
ls -l out/superres/
echo
echo "diffuse: its picture: out/superres/superres.png (rows: low resolution, bicubic, diffusion,"
echo "  original; a column per class); its scores: out/superres/metrics.json (more test images:"
echo "  $bin/diffuse_evaluate --checkpoint out/superres/checkpoint.safetensors --sr-images 10000)"
