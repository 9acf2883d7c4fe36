#!/usr/bin/env bash
# From a fresh Debian 12 machine to a tested build: install what is missing, configure and build the
# test preset (Ninja; tests and example programs at -O2, the kernel tests at -O3 for each instruction
# set), run every test: unit tests, the SIMD kernels on each instruction set this processor has,
# header and ODR checks, consumer projects, the example programs end to end.
#
#   bash scripts/test.sh          the suite above
#   bash scripts/test.sh --all    also the two slow checks, each a step of its own (what CI runs):
#                                 the unit tests under ASan+UBSan, and the examples, benchmarks and
#                                 headers compiled for x86-64, x86-64-v3 and x86-64-v4
# DIFFUSE_PRESET picks the CMake preset (default test; CI uses ci, which adds -Werror).
set -euo pipefail
cd "$(dirname "$0")/.."

all=0
case "${1:-}" in
  "") ;;
  --all) all=1 ;;
  *) echo "usage: bash scripts/test.sh [--all]" >&2; exit 2 ;;
esac
preset=${DIFFUSE_PRESET:-test}

bash scripts/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
step() { echo; echo "diffuse: == $* =="; }
start=$SECONDS
step "configure (preset $preset)"
cmake --preset "$preset"
configured=$SECONDS
step "build"
cmake --build --preset "$preset" --parallel "$jobs"
built=$SECONDS
step "test"
ctest --preset "$preset" --parallel "$jobs" -LE sanitize
tested=$SECONDS
summary="configure $((configured - start))s, build $((built - configured))s, test $((tested - built))s"

if ((all)); then
  step "sanitizers: build the unit tests with ASan+UBSan"
  cmake --build --preset "$preset" --parallel "$jobs" --target diffuse_tests_sanitized
  step "sanitizers: run them"
  ctest --preset "$preset" -L sanitize
  sanitized=$SECONDS
  step "instruction sets: compile examples, benchmarks and headers for x86-64, x86-64-v3, x86-64-v4"
  cmake --preset "$preset" -DDIFFUSE_ISA_CHECKS=ON > /dev/null
  cmake --build --preset "$preset" --parallel "$jobs" --target diffuse_isa_checks
  checked=$SECONDS
  summary="$summary; sanitizers $((sanitized - tested))s, instruction-set compile checks $((checked - sanitized))s"
fi

echo
echo "diffuse: all tests passed ($summary on $jobs cores)"
