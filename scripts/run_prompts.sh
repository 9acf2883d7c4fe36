#!/usr/bin/env bash
# The prompt-conditioned model end to end, from a fresh Debian 12 machine: install what is missing,
# build the example programs with the release preset, then train a text encoder and a U-Net with
# cross-attention on captions built from each training image (diffuse_train --prompts, the default
# 10 minutes; out/prompts/), which writes the class pictures and scores (each class asked for by its
# prompt "a <noun>"), prompts.png (a row per prompt) and the prompt-adherence figures; then samples two
# prompts with diffuse_sample --prompt. DIFFUSE_TRAIN_ARGS adds options to diffuse_train.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

examples=(diffuse_train_classifier diffuse_train diffuse_sample diffuse_evaluate)
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
run "$bin/diffuse_train" --prompts --data-dir "$data" --out out/prompts --classifier out/classifier.safetensors \
    ${DIFFUSE_TRAIN_ARGS:-}
run "$bin/diffuse_sample" --checkpoint out/prompts/checkpoint.safetensors --prompt "a dark ankle boot" \
    --prompt "a light ankle boot" --count 8 --out out/prompts/boots.png

echo "diffuse: the prompt model's output:"
ls -l out/prompts/
echo
echo "diffuse: its pictures: out/prompts/prompts.png (a row per prompt), out/prompts/boots.png,"
echo "  out/prompts/samples_by_class.png (each class by its prompt \"a <noun>\"); its scores and prompt"
echo "  adherence: out/prompts/metrics.json (more: $bin/diffuse_sample --checkpoint"
echo "  out/prompts/checkpoint.safetensors --prompt \"a wide dress\")"
