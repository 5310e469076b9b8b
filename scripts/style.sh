#!/usr/bin/env bash
# The style checks CI runs before the suite: formatting, lint, types of every entry point, and the
# import direction. Prints one line per check and ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
deno=node_modules/.bin/deno
export NO_COLOR=1
passed=0 failed=0
check() {
  local name=$1
  shift
  if out=$("$@" 2>&1); then
    echo "style: $name ok"
    passed=$((passed + 1))
  else
    echo "$out" | tail -40
    echo "style: $name FAILED ($*)"
    failed=$((failed + 1))
  fi
}
check "deno fmt --check" "$deno" fmt --check
check "deno lint" "$deno" lint
check "deno check" "$deno" check mod.ts cli.ts bench/*.ts examples/*.ts scripts/*.ts
check "deno publish --dry-run" "$deno" publish --dry-run --allow-dirty
check "import direction" "$deno" run --allow-read scripts/check_imports.ts
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
