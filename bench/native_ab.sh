#!/usr/bin/env bash
# A/B of csrc/cpu_kernels.c at a git revision (default HEAD) against the working tree's, with
# bench/native_ab.c: bash bench/native_ab.sh [rev] [threads] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
flags=(-O3 -march=native -ffp-contract=off -fno-math-errno -fPIC -shared -pthread -Icsrc)
git show "$rev:csrc/cpu_kernels.c" >"$dir/old.c"
${CC:-cc} "${flags[@]}" "$dir/old.c" -o "$dir/old.so" -lm
${CC:-cc} "${flags[@]}" csrc/cpu_kernels.c -o "$dir/new.so" -lm
${CC:-cc} -O2 bench/native_ab.c -o "$dir/ab" -ldl -lm
"$dir/ab" "$dir/old.so" "$dir/new.so" "${2:-2}" "${3:-15}"
