#!/usr/bin/env bash
# Fetches htmx (npm package htmx.org) at a pinned version into ui/static/vendor/htmx.min.js.
# The tarball's sha512 is pinned here and checked before anything is copied, so a changed package on
# the registry fails the set-up instead of being served. The pages work without it (no JavaScript),
# so it is not committed. Idempotent; quiet when the right file is already there.
set -euo pipefail
VERSION=2.0.11
INTEGRITY="sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=="

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/ui/static/vendor"
stamp="$dest/.htmx-version"
if [ -f "$dest/htmx.min.js" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! command -v npm >/dev/null 2>&1; then
  echo "htmx.org@${VERSION}: npm is needed to fetch it (install Node.js and npm)" >&2
  exit 1
fi
(cd "$tmp" && npm pack --silent "htmx.org@${VERSION}" >/dev/null)
mv "$tmp"/htmx.org-"${VERSION}".tgz "$tmp/htmx.tgz"

got="sha512-$(openssl dgst -sha512 -binary "$tmp/htmx.tgz" | openssl base64 -A)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "htmx.org@${VERSION}: integrity mismatch (expected $INTEGRITY, got $got)" >&2
  exit 1
fi

tar -xzf "$tmp/htmx.tgz" -C "$tmp" package/dist/htmx.min.js
mkdir -p "$dest"
cp "$tmp/package/dist/htmx.min.js" "$dest/htmx.min.js.tmp"
mv "$dest/htmx.min.js.tmp" "$dest/htmx.min.js"
echo "$VERSION" > "$stamp"
