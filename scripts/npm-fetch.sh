#!/usr/bin/env bash
# Fetches one file of a pinned npm package through npm (`npm pack`, so the user's npm configuration
# decides where from) and copies it to a destination, after checking the tarball's sha512 against the
# pinned integrity: a changed package fails the set-up instead of being used.
#   npm-fetch.sh NAME VERSION INTEGRITY PATH-IN-PACKAGE DEST
# Idempotent: quiet when DEST exists and DEST.version names VERSION.
set -euo pipefail
name="$1" version="$2" integrity="$3" inner="$4" dest="$5"
stamp="$dest.version"
if [ -f "$dest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "${name}@${version}: npm is needed to fetch it (install Node.js and npm)" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "${name}@${version}" >/dev/null)
tgz="$(ls "$tmp"/*.tgz)"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | openssl base64 -A)"
if [ "$got" != "$integrity" ]; then
  echo "${name}@${version}: integrity mismatch (expected $integrity, got $got)" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$tmp" "package/$inner"
mkdir -p "$(dirname "$dest")"
cp "$tmp/package/$inner" "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "$version" > "$stamp"
