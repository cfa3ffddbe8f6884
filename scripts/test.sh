#!/usr/bin/env bash
# Runs every test (unit tests beside the code, cross-service tests in test/) with node:test
# through tsx. Extra arguments are passed to the runner, e.g. `npm test -- --test-name-pattern=TLS`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:/usr/sbin:$PATH"
mapfile -t files < <(find services test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
if [ ${#files[@]} -eq 0 ]; then
  echo "no test files found" >&2
  exit 1
fi
exec tsx --test --test-reporter=spec --test-concurrency=2 --test-timeout=480000 "$@" "${files[@]}"
