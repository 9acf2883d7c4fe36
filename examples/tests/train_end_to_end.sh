#!/usr/bin/env bash
# CTest: a short end-to-end run of diffuse_train on a few hundred Fashion-MNIST images with the tiny
# U-Net, which must produce every file it promises; then diffuse_sample and diffuse_evaluate on its
# checkpoint, the image-to-image measurement too, and its refusal of a bad class pair. Exit 77
# (CTest's SKIP_RETURN_CODE) when the data set is not installed.
#
#   train_end_to_end.sh <diffuse_train> <diffuse_sample> <diffuse_evaluate> <work dir>
set -euo pipefail
train=$1 sample=$2 evaluate=$3 work=$4
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work"
small=(--max-images 256 --test-images 100 --per-class 2 --unconditional 10 --sample-steps 5 --inpaint-steps 5
       --bpd-images 4 --bpd-stride 250)
"$train" --config tiny --res-blocks 2 --model-channels 16 --steps 8 --batch-size 16 --checkpoint-every 4 --classifier-epochs 1 \
    --log-seconds 0 --out "$work/train" "${small[@]}"
for f in checkpoint.safetensors loss.csv samples_by_class.png samples_unconditional.png denoising.png \
         inpainting.png metrics.json; do
    [[ -s $work/train/$f ]] || { echo "missing or empty: $work/train/$f"; exit 1; }
done
[[ -s $work/classifier.safetensors ]] || { echo "missing: $work/classifier.safetensors"; exit 1; }
# 8 steps: a header line and one line per step
[[ $(wc -l < "$work/train/loss.csv") -eq 9 ]] || { echo "loss.csv should have 9 lines"; exit 1; }
for key in class_agreement frechet_distance bits_per_dim; do
    grep -q "\"$key\"" "$work/train/metrics.json" || { echo "metrics.json has no $key"; exit 1; }
done
# tiny has one ResBlock per level; --res-blocks 2 must reach the model and its record
grep -qF '"num_res_blocks": 2' "$work/train/metrics.json" || { echo "metrics.json does not record --res-blocks 2"; exit 1; }
# and --model-channels 16 (tiny has 8); a count the GroupNorm groups do not divide is refused
grep -qF '"model_channels": 16' "$work/train/metrics.json" || { echo "metrics.json does not record --model-channels 16"; exit 1; }
expect_failure 'not a multiple of 8' "$train" --config tiny --model-channels 12 --steps 1 --out "$work/none"

"$sample" --checkpoint "$work/train/checkpoint.safetensors" --classes 1,7 --count 3 --steps 4 \
    --out "$work/samples.png" --npy "$work/samples.npy"
[[ -s $work/samples.png ]] || { echo "diffuse_sample wrote no PNG"; exit 1; }
# 6 samples of 28x28 bytes after a 128-byte header; 6 int64 labels after theirs
[[ $(stat -c %s "$work/samples.npy") -eq $((128 + 6 * 28 * 28)) ]] || { echo "samples.npy has the wrong size"; exit 1; }
[[ $(stat -c %s "$work/samples_labels.npy") -eq $((128 + 6 * 8)) ]] || { echo "samples_labels.npy has the wrong size"; exit 1; }

# guidance in a limited interval, a class model's default: sigma_t <= 5.42 is t <= 881 of the cosine
# schedule (T = 1000); 0 inf guides every step
"$sample" --checkpoint "$work/train/checkpoint.safetensors" --classes 2 --count 2 --steps 4 --out "$work/interval.png" \
    > "$work/interval.log"
grep -qF 'guided at timesteps [0, 881] only' "$work/interval.log" || { echo "diffuse_sample did not say where it guides"; cat "$work/interval.log"; exit 1; }
# and a class model's default scale, 2.5; a scale that is not a number is refused
grep -qF 'guidance 2.5,' "$work/interval.log" || { echo "diffuse_sample did not guide at 2.5"; cat "$work/interval.log"; exit 1; }
expect_failure 'expected a finite scale' "$sample" --checkpoint "$work/train/checkpoint.safetensors" --count 1 \
    --guidance nan --out "$work/none.png"
"$sample" --checkpoint "$work/train/checkpoint.safetensors" --classes 2 --count 2 --steps 4 --guidance-interval 0 inf \
    --out "$work/interval.png" > "$work/every_step.log"
if grep -qF 'guided at timesteps' "$work/every_step.log"; then echo "--guidance-interval 0 inf should guide every step"; exit 1; fi
if out=$("$sample" --checkpoint "$work/train/checkpoint.safetensors" --count 1 --guidance-interval 1e6 2e6 --out "$work/none.png" 2>&1); then
    echo "--guidance-interval 1e6 2e6 should have failed"; exit 1
fi
grep -qF 'expected an interval holding a timestep of the schedule' <<< "$out" || { echo "the refusal of an empty interval does not say why: $out"; exit 1; }

"$evaluate" --checkpoint "$work/train/checkpoint.safetensors" --out "$work/eval" "${small[@]:2}"
[[ -s $work/eval/metrics.json ]] || { echo "diffuse_evaluate wrote no metrics.json"; exit 1; }
grep -qF '"last_timestep": 881' "$work/eval/metrics.json" || { echo "metrics.json does not record the guidance interval"; exit 1; }
# the agreement's ceiling: the classifier on as many real training images (20 here) and their labels
grep -qE '"real_images": (0|1)(\.[0-9]+)?,' "$work/eval/metrics.json" || { echo "metrics.json has no real images' agreement"; exit 1; }
grep -qF '"guidance_scale": 2.5' "$work/eval/metrics.json" || { echo "metrics.json does not record the scale 2.5"; exit 1; }
grep -qF '"guidance_scale": 2.5' "$work/train/metrics.json" || { echo "diffuse_train's metrics.json: no scale 2.5"; exit 1; }

"$evaluate" --checkpoint "$work/train/checkpoint.safetensors" --out "$work/edit" --image-to-image --pair 0:2 \
    --pair 7:9 --strengths 0.5,1 --edit-images 3 --sample-steps 4 --test-images 100 > "$work/edit.log"
[[ -s $work/edit/sdedit.png ]] || { echo "diffuse_evaluate --image-to-image wrote no sdedit.png"; exit 1; }
# 2 pairs x 2 strengths: four rows of the table, s = 0.5 starting at t = 499, 4 sampler steps within [0, 499]
[[ $(grep -c '"target_agreement"' "$work/edit/metrics.json") -eq 4 ]] || { echo "the image-to-image table should have 4 rows"; exit 1; }
grep -qE '^ +0 -> 2 +0.50 +499 +4 ' "$work/edit.log" || { echo "diffuse_evaluate printed no row for 0 -> 2 at 0.5"; cat "$work/edit.log"; exit 1; }
if out=$("$evaluate" --checkpoint "$work/train/checkpoint.safetensors" --out "$work/edit" --image-to-image --pair 3-4 2>&1); then
    echo "--pair 3-4 should have failed"; exit 1
fi
grep -qF 'SOURCE:TARGET' <<< "$out" || { echo "the refusal of --pair 3-4 does not say what is expected: $out"; exit 1; }
echo "ok"
