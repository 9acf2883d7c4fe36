# Sourced by the end-to-end CTest scripts.

# Exits 77 (CTest's SKIP_RETURN_CODE) when Fashion-MNIST is not installed; sets $data.
data=/usr/share/datasets/fashion-mnist
if [[ ! -e $data/train-images-idx3-ubyte.gz ]]; then
    echo "skipped: no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
    exit 77
fi

# expect_failure <text the message must hold> <command...>: the command fails and says so
expect_failure() {
    local text=$1; shift
    local out
    if out=$("$@" 2>&1); then echo "should have failed: $*"; exit 1; fi
    grep -qF -- "$text" <<< "$out" || { echo "the message of '$*' does not name '$text':"; echo "$out"; exit 1; }
}
