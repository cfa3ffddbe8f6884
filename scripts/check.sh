#!/usr/bin/env bash
# Static checks: types, lint and format, buf lint/format/breaking, and that gen/ is what
# `buf generate` makes from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"

step() { echo "check: $*"; }

step "tsc --noEmit"
tsc --noEmit -p tsconfig.json

step "biome (lint and format)"
biome ci --reporter=summary .

step "buf lint"
buf lint

step "buf format"
buf format --diff --exit-code

if git rev-parse --verify -q main >/dev/null && [ -n "$(git ls-tree -r --name-only main -- proto | grep '\.proto$' || true)" ]; then
  step "buf breaking against main"
  buf breaking --against '.git#branch=main'
else
  step "buf breaking skipped: main has no protos yet"
fi

step "gen/ is fresh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
buf generate -o "$tmp"
if ! diff -r gen "$tmp/gen" >/dev/null; then
  diff -r gen "$tmp/gen" | head -20 >&2
  echo "check: gen/ is stale: run 'npm run generate' and commit gen/" >&2
  exit 1
fi
echo "check: all passed"
