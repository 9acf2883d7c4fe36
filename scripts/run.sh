#!/usr/bin/env bash
# From a fresh Debian 12 machine to the examples' output: install what is missing, build the example
# programs with the release preset, run each one, writing what it produces under out/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

examples=(diffuse_schedule diffuse_noising)
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

echo "diffuse: example output in out/:"
ls -l out/
