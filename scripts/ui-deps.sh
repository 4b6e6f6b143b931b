#!/usr/bin/env bash
# What the web UI's build and browser tests need (called by scripts/install-deps.sh):
#   - Debian's chromium (headless, driven by playwright-core: `npx playwright install` does
#     not work here), nodejs and npm;
#   - playwright-core at tests/ui/package-lock.json's version (`npm ci` in tests/ui, skipped
#     when that version is already installed there).
# The wasm toolchain (wasm32 target, wasm-bindgen-cli, uPlot) is scripts/build-ui.sh's.
# Needs root (or passwordless sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "ui-deps: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=""
for p in chromium nodejs npm; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ] && ! { command -v node >/dev/null && command -v npm >/dev/null && [ -x /usr/bin/chromium ]; }; then
    log "apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq $missing >/dev/null
fi

want="$(node -e 'const l=require("./tests/ui/package-lock.json");console.log(l.packages["node_modules/playwright-core"].version)')"
have="$(node -e 'try{console.log(require("./tests/ui/node_modules/playwright-core/package.json").version)}catch(e){console.log("")}')"
if [ "$want" != "$have" ]; then
    log "npm ci in tests/ui (playwright-core $want)"
    (cd tests/ui && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
