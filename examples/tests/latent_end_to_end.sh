#!/usr/bin/env bash
# CTest: the latent pipeline end to end on a few hundred Fashion-MNIST images: diffuse_train_autoencoder
# (its files, a resumed run that writes the same checkpoint as a straight one), diffuse_train
# --autoencoder with the tiny U-Net, diffuse_sample and diffuse_evaluate on the latent checkpoint, and the
# mistakes it must refuse. Exit 77 (CTest's SKIP_RETURN_CODE) when the data set is not installed.
#
#   latent_end_to_end.sh <diffuse_train_autoencoder> <diffuse_train> <diffuse_sample> <diffuse_evaluate> <work dir>
set -euo pipefail
train_ae=$1 train=$2 sample=$3 evaluate=$4 work=$5
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work"
ae=(--ch 8 --max-images 256 --test-images 100 --scale-images 100 --batch-size 16 --log-seconds 0 --no-eval)
"$train_ae" "${ae[@]}" --steps 6 --checkpoint-every 3 --out "$work/ae"
for f in autoencoder.safetensors checkpoint.safetensors loss.csv reconstructions.png metrics.json; do
    [[ -s $work/ae/$f ]] || { echo "missing or empty: $work/ae/$f"; exit 1; }
done
[[ $(wc -l < "$work/ae/loss.csv") -eq 7 ]] || { echo "loss.csv should have 7 lines"; exit 1; }
for key in psnr_db mse latent_scale_factor; do
    grep -q "\"$key\"" "$work/ae/metrics.json" || { echo "metrics.json has no $key"; exit 1; }
done
# resumed at step 3, it must end with the checkpoint of the straight run
"$train_ae" "${ae[@]}" --steps 3 --checkpoint-every 0 --out "$work/ae_half"
"$train_ae" "${ae[@]}" --steps 6 --checkpoint-every 0 --resume "$work/ae_half/checkpoint.safetensors" --out "$work/ae_half"
cmp "$work/ae/checkpoint.safetensors" "$work/ae_half/checkpoint.safetensors" ||
    { echo "the resumed autoencoder run's checkpoint differs from the straight run's"; exit 1; }

small=(--max-images 256 --test-images 100 --per-class 2 --unconditional 10 --sample-steps 5 --inpaint-steps 5)
"$train" --config tiny --steps 6 --batch-size 16 --checkpoint-every 3 --log-seconds 0 --classifier-epochs 1 \
    --autoencoder "$work/ae/autoencoder.safetensors" --out "$work/latent" "${small[@]}"
for f in checkpoint.safetensors samples_by_class.png samples_unconditional.png denoising.png inpainting.png metrics.json; do
    [[ -s $work/latent/$f ]] || { echo "missing or empty: $work/latent/$f"; exit 1; }
done
for key in latent class_agreement frechet_distance; do
    grep -q "\"$key\"" "$work/latent/metrics.json" || { echo "the latent run's metrics.json has no $key"; exit 1; }
done

# resumed at step 3 (the autoencoder taken from the checkpoint), it must end with the straight run's checkpoint
"$train" --config tiny --steps 3 --batch-size 16 --checkpoint-every 0 --log-seconds 0 --no-eval \
    --autoencoder "$work/ae/autoencoder.safetensors" --out "$work/latent_half" "${small[@]}"
"$train" --steps 6 --checkpoint-every 0 --log-seconds 0 --no-eval --resume "$work/latent_half/checkpoint.safetensors" \
    --out "$work/latent_half" "${small[@]}"
cmp "$work/latent/checkpoint.safetensors" "$work/latent_half/checkpoint.safetensors" ||
    { echo "the resumed latent run's checkpoint differs from the straight run's"; exit 1; }

for sampler in ddpm ddim dpm++2m; do
    "$sample" --checkpoint "$work/latent/checkpoint.safetensors" --sampler $sampler --classes 4 --count 2 --steps 3 \
        --out "$work/samples_$sampler.png"
    [[ -s $work/samples_$sampler.png ]] || { echo "diffuse_sample --sampler $sampler wrote no PNG"; exit 1; }
done
"$sample" --checkpoint "$work/latent/checkpoint.safetensors" --classes 1,7 --count 3 --steps 4 \
    --out "$work/samples.png" --npy "$work/samples.npy"
# decoded: 6 samples of 28x28 bytes after a 128-byte header
[[ $(stat -c %s "$work/samples.npy") -eq $((128 + 6 * 28 * 28)) ]] || { echo "samples.npy has the wrong size"; exit 1; }
"$evaluate" --checkpoint "$work/latent/checkpoint.safetensors" --out "$work/eval" --classifier-epochs 1 \
    --test-images 100 --per-class 2 --unconditional 10 --sample-steps 5 --inpaint-steps 5
grep -q '"class_agreement"' "$work/eval/metrics.json" || { echo "diffuse_evaluate wrote no class agreement"; exit 1; }

# mistakes: each must fail with a message naming it
refused() {  # refused <text the message must contain> <command...>
    local want=$1; shift
    if "$@" > "$work/refused.log" 2>&1; then echo "accepted: $*"; exit 1; fi
    grep -q -- "$want" "$work/refused.log" || { echo "the message of '$*' does not say '$want':"; cat "$work/refused.log"; exit 1; }
}
"$train" --config tiny --steps 2 --batch-size 16 --checkpoint-every 0 --log-seconds 0 --no-eval --out "$work/pixel" "${small[@]}"
refused "checkpoint of a pixel model" "$sample" --checkpoint "$work/pixel/checkpoint.safetensors" \
    --autoencoder "$work/ae/autoencoder.safetensors" --out ""
refused "diffuse.autoencoder_config" "$train" --config tiny --steps 2 --no-eval --out "$work/bad" \
    --autoencoder "$work/pixel/checkpoint.safetensors" "${small[@]}"
"$train_ae" "${ae[@]}" --steps 2 --seed 1 --out "$work/ae_other"  # the same configuration, other weights
refused "scale factor" "$sample" --checkpoint "$work/latent/checkpoint.safetensors" \
    --autoencoder "$work/ae_other/autoencoder.safetensors" --out ""
"$train_ae" "${ae[@]}" --steps 2 --z-channels 3 --out "$work/ae3"
refused "configuration" "$sample" --checkpoint "$work/latent/checkpoint.safetensors" \
    --autoencoder "$work/ae3/autoencoder.safetensors" --out ""
echo "ok"
