#!/usr/bin/env bash
# Installs the Debian 12 packages diffuse's build, tests and examples need. Only missing packages
# are installed, so a second run does nothing (and needs no root).
set -euo pipefail

packages=(
  cmake g++ make ninja-build
  libeigen3-dev           # the library's one dependency
  catch2                  # tests
  libbenchmark-dev        # benchmarks
  zlib1g-dev libstb-dev nlohmann-json3-dev libcli11-dev  # examples: gzip, PNG, JSON, command lines
  gnuplot-nox             # plots of example output
  dataset-fashion-mnist   # the training set for the examples
  openmpi-bin libopenmpi-dev  # data-parallel training (diffuse::mpi, mpirun -np N diffuse_train) and its tests
)

if ! command -v dpkg >/dev/null 2>&1; then
  echo "install-deps: no dpkg (not Debian?); install these yourself if the build fails: ${packages[*]}" >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  # dpkg -s also succeeds for removed-but-not-purged packages, so check the status line.
  if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if ((EUID == 0)); then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
  exit 1
fi
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
