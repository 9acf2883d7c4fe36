#!/usr/bin/env bash
# From a fresh Debian 12 machine to a tested build: install what is missing, configure and build the
# release preset, run every test (unit tests, header and ODR checks, consumer projects, sanitizers).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
start=$SECONDS
cmake --preset release
configured=$SECONDS
cmake --build --preset release --parallel "$jobs"
built=$SECONDS
ctest --preset release --parallel "$jobs"
tested=$SECONDS

echo "diffuse: all tests passed (configure $((configured - start))s," \
     "build $((built - configured))s, test $((tested - built))s on $jobs cores)"
