#!/usr/bin/env bash
# Fetches htmx (npm package htmx.org) at a pinned version into ui/static/vendor/htmx.min.js, its
# tarball's sha512 checked (scripts/npm-fetch.sh). The pages work without it (no JavaScript), so it
# is not committed. Idempotent; quiet when the right file is already there.
set -euo pipefail
VERSION=2.0.11
INTEGRITY="sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=="
root="$(cd "$(dirname "$0")/.." && pwd)"
exec bash "$root/scripts/npm-fetch.sh" htmx.org "$VERSION" "$INTEGRITY" dist/htmx.min.js \
  "$root/ui/static/vendor/htmx.min.js"
