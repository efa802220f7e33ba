#!/usr/bin/env bash
# Installs what the tests need beyond the Python packages: git (interop and benchmarks compare
# against it), strace (tests count the syncs a command makes) and Chromium (the web UI's browser tests drive /usr/bin/chromium through Playwright).
# Idempotent; quiet when everything is present.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v strace >/dev/null 2>&1 || need+=(strace)  # tests count a command's fsyncs with it
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi
