#!/usr/bin/env bash
# CTest: diffuse_train data-parallel on 2 MPI ranks. Its losses match one process stepping on the
# same global batches; N steps straight and N/2 + a --resume for the other N/2 write the same
# checkpoint byte for byte; a checkpoint of 2 ranks resumes in one process; a batch that does not
# split evenly is refused; one rank given a bad data path ends the whole job with its message, within
# a timeout, not a hang. Exit 77 (skip) when the data set is not installed.
#
#   mpi_end_to_end.sh <mpiexec> <diffuse_train> <work dir>
set -euo pipefail
mpiexec=$1 train=$2 work=$3
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work"
# Open MPI refuses root without these (CI runs as root), and a 1-core machine without oversubscribing
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export DIFFUSE_NUM_THREADS=1
on2=("$mpiexec" -n 2)
# 200 images at batch 16: the resumed half crosses an epoch boundary
common=("$train" --config tiny --max-images 200 --test-images 50 --no-eval --per-class 1 --unconditional 1
        --sample-steps 2 --inpaint-steps 4 --checkpoint-every 0 --log-seconds 0)
run=("${common[@]}" --batch-size 16)

"${on2[@]}" "${run[@]}" --steps 16 --out "$work/straight" > "$work/straight.log"
grep -q "on each of 2 ranks (data-parallel, 8 images each per step)" "$work/straight.log" ||
    { echo "the 2-rank run did not say it ran data-parallel:"; cat "$work/straight.log"; exit 1; }
[[ -s $work/straight/samples_by_class.png ]] || { echo "rank 0 wrote no report"; exit 1; }

# One process on the same global batches: the same draws and samples, so the losses agree up to the
# order of float additions (the first step's to 1e-6, from the same weights; the later ones drift by
# Adam's updates of near-zero gradients, to 1e-3).
"${run[@]}" --steps 16 --out "$work/one" > "$work/one.log"
paste -d, "$work/straight/loss.csv" "$work/one/loss.csv" | awk -F, 'NR > 1 {
    d = ($2 - $8) / $8; if (d < 0) d = -d
    if ((NR == 2 && d > 1e-6) || d > 1e-3) { printf "step %d: loss %s on 2 ranks, %s in one process\n", $1, $2, $8; bad = 1 }
} END { exit bad }' || { echo "the 2-rank losses are not the one-process losses"; exit 1; }
echo "ok: the 2-rank losses match one process's on the global batch"

"${on2[@]}" "${run[@]}" --steps 8 --out "$work/resumed" > "$work/first_half.log"
cp "$work/resumed/checkpoint.safetensors" "$work/half.safetensors"
"${on2[@]}" "${run[@]}" --steps 16 --resume "$work/half.safetensors" --out "$work/resumed" > "$work/second_half.log"
cmp "$work/straight/checkpoint.safetensors" "$work/resumed/checkpoint.safetensors" ||
    { echo "the resumed 2-rank run's checkpoint differs from the straight one's"; exit 1; }
echo "ok: resumed on 2 ranks, the checkpoint is identical to the straight run's"

"${run[@]}" --steps 20 --resume "$work/straight/checkpoint.safetensors" --out "$work/other_count" > "$work/other_count.log"
grep -q "trained steps 16 to 20" "$work/other_count.log" || { echo "a 2-rank checkpoint did not resume in one process"; exit 1; }
echo "ok: a 2-rank checkpoint resumes in one process"

expect_failure "--batch-size = 15, expected a multiple of the 2 ranks" \
    "${on2[@]}" "${common[@]}" --batch-size 15 --steps 2 --out "$work/bad_batch"
# MPMD: rank 0 as above, rank 1 with a data path that does not exist; rank 0 would wait for rank 1 in
# the first step's sum, so the job must end because rank 1's error ends it, not at the timeout (124).
start=$SECONDS
status=0
out=$(timeout 120 "$mpiexec" -n 1 "${run[@]}" --steps 50 --out "$work/bad_data" : \
                             -n 1 "${run[@]}" --steps 50 --out "$work/bad_data" --data-dir "$work/no-such-dir" 2>&1) || status=$?
if ((status == 0 || status == 124)); then
    echo "a rank without its data should have ended the job with an error (exit $status):"; echo "$out"; exit 1
fi
grep -qF "$work/no-such-dir" <<< "$out" || { echo "the job's error does not name the bad data path:"; echo "$out"; exit 1; }
echo "ok: a rank without its data ended the job in $((SECONDS - start)) s with exit $status"
