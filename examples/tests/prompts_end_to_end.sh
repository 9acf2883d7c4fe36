#!/usr/bin/env bash
# CTest: a short end-to-end run of the prompt-conditioned model (diffuse_train --prompts) on a few
# hundred Fashion-MNIST images with the tiny U-Net, which must produce every file it promises and the
# prompt-adherence figures; diffuse_sample --prompt (and image-to-image, --source-class) and
# diffuse_evaluate on its checkpoint; and the refusals: a word outside the vocabulary, a prompt too
# long, --prompt for a class model's checkpoint, --classes for a prompt model's, --prompts with
# --autoencoder, a strength outside (0, 1]. Exit 77 (CTest's SKIP_RETURN_CODE)
# when the data set is not installed.
#
#   prompts_end_to_end.sh <diffuse_train> <diffuse_sample> <diffuse_evaluate> <work dir>
set -euo pipefail
train=$1 sample=$2 evaluate=$3 work=$4
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work"
small=(--max-images 256 --test-images 100 --per-class 2 --unconditional 10 --sample-steps 5 --inpaint-steps 5
       --bpd-images 4 --bpd-stride 250 --attribute-samples 10)
"$train" --prompts --config tiny --steps 8 --batch-size 16 --checkpoint-every 4 --classifier-epochs 1 --log-seconds 0 \
    --out "$work/train" "${small[@]}"
for f in checkpoint.safetensors loss.csv samples_by_class.png samples_unconditional.png denoising.png \
         inpainting.png prompts.png metrics.json; do
    [[ -s $work/train/$f ]] || { echo "missing or empty: $work/train/$f"; exit 1; }
done
[[ $(wc -l < "$work/train/loss.csv") -eq 9 ]] || { echo "loss.csv should have 9 lines"; exit 1; }
for key in class_agreement frechet_distance bits_per_dim prompt_adherence prompts_figure; do
    grep -q "\"$key\"" "$work/train/metrics.json" || { echo "metrics.json has no $key"; exit 1; }
done

ckpt=$work/train/checkpoint.safetensors
"$sample" --checkpoint "$ckpt" --prompt "a dark ankle boot" --prompt "A sneaker!" --count 3 --steps 4 \
    --out "$work/samples.png" --npy "$work/samples.npy"
[[ -s $work/samples.png ]] || { echo "diffuse_sample wrote no PNG"; exit 1; }
[[ $(stat -c %s "$work/samples.npy") -eq $((128 + 6 * 28 * 28)) ]] || { echo "samples.npy has the wrong size"; exit 1; }

# image-to-image: test T-shirts toward a prompt; the grid has the sources as its first row
"$sample" --checkpoint "$ckpt" --source-class 0 --prompt "a pullover" --count 2 --strength 0.5 --steps 3 \
    --out "$work/sdedit.png" > "$work/sdedit.log"
grep -q "image-to-image from the first 2 test images of class 0 at strength 0.5 (t = 499)" "$work/sdedit.log" \
    || { echo "diffuse_sample --source-class did not say what it did"; cat "$work/sdedit.log"; exit 1; }
[[ -s $work/sdedit.png ]] || { echo "diffuse_sample --source-class wrote no PNG"; exit 1; }
expect_failure 'strength = 1.5' "$sample" --checkpoint "$ckpt" --source-class 0 --prompt "a bag" --strength 1.5 --steps 2
expect_failure '"purple"' "$sample" --checkpoint "$ckpt" --prompt "a purple boot" --steps 2
expect_failure 'at most 7 words' "$sample" --checkpoint "$ckpt" --prompt "a a a a a a a a bag" --steps 2
expect_failure '--classes' "$sample" --checkpoint "$ckpt" --classes 1 --steps 2
expect_failure '--prompt' "$sample" --checkpoint "$ckpt" --steps 2
"$train" --config tiny --steps 2 --batch-size 4 --no-eval --per-class 1 --unconditional 1 --sample-steps 2 \
    --inpaint-steps 4 --max-images 64 --test-images 10 --log-seconds 0 --out "$work/classes" > "$work/classes.log"
expect_failure 'not a prompt model' "$sample" --checkpoint "$work/classes/checkpoint.safetensors" --prompt "a bag" --steps 2
expect_failure '--prompts with --autoencoder' "$train" --prompts --autoencoder "$ckpt" --steps 1 --no-eval --out "$work/x"

"$evaluate" --checkpoint "$ckpt" --out "$work/eval" "${small[@]:2}"
grep -q '"prompt_adherence"' "$work/eval/metrics.json" || { echo "diffuse_evaluate wrote no prompt_adherence"; exit 1; }
# a prompt model guides every step unless told otherwise (the class model's interval cost it agreement)
grep -q '"guidance_interval": "every step"' "$work/eval/metrics.json" || { echo "a prompt model should guide every step by default"; exit 1; }
echo "ok"
