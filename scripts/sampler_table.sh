#!/usr/bin/env bash
# Every sampler at 10, 20 and 50 model evaluations on one class-conditional checkpoint: class agreement
# and Frechet distance of --per-class samples per class (diffuse_evaluate, guidance 3), one markdown
# table on stdout. Heun's n levels cost 2n - 2 evaluations, so it runs 6, 11 and 26 levels.
#
#   bash scripts/sampler_table.sh out/train/checkpoint.safetensors [per-class, default 100]
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=$1 per_class=${2:-100}
bin=build/release/examples
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| sampler | 10 evaluations | 20 evaluations | 50 evaluations |"
echo "| --- | --- | --- | --- |"
for sampler in ddpm ddim dpm++2m euler euler_a heun; do
    row="| $sampler |"
    for evaluations in 10 20 50; do
        steps=$evaluations
        [[ $sampler == heun ]] && steps=$(((evaluations + 2) / 2))
        "$bin/diffuse_evaluate" --checkpoint "$checkpoint" --out "$work/$sampler-$evaluations" --sampler "$sampler" \
            --guidance 3 --sample-steps "$steps" --per-class "$per_class" --unconditional 0 --inpaint-steps 0 --bpd-images 0 \
            --log-seconds 60 > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
        row+=$(/usr/bin/python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(" %.3f / %.1f |" % (m["class_agreement"]["value"], m["frechet_distance"]["generated_vs_test"]), end="")' \
            "$work/$sampler-$evaluations/metrics.json")
    done
    echo "$row"
done
