#!/usr/bin/env bash
# Installs what the tests need beyond the Python packages: git (interop and benchmarks compare
# against it), strace (tests count the syncs a command makes), util-linux (unshare, setpriv, prlimit,
# taskset: the warm server's tests) and Chromium (the web UI's browser tests drive /usr/bin/chromium through Playwright).
# Idempotent; quiet when everything is present.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v strace >/dev/null 2>&1 || need+=(strace)  # tests count a command's fsyncs with it
# the warm server's tests start clients confined otherwise (namespaces, privileges, limits, CPUs)
for tool in unshare setpriv prlimit taskset; do
  command -v "$tool" >/dev/null 2>&1 || { need+=(util-linux); break; }
done
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi
# axe-core (npm, pinned, sha512 checked): the accessibility checker the browser tests inject into each
# page (tests/ui/test_ui_a11y.py); kept in the git-ignored .cache/npm/.
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/npm-fetch.sh" axe-core 4.14.1 \
  "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==" \
  axe.min.js "$root/.cache/npm/axe-core/axe.min.js"
