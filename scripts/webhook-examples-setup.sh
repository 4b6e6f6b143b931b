#!/usr/bin/env bash
# Installs GitHub's real webhook payloads (npm @octokit/webhooks-examples) into the user cache,
# keyed by version, and prints `CAPSTAN_WEBHOOK_EXAMPLES=<path of api.github.com/index.json's
# folder>` for `eval`. The pipeline trigger tests (tests/e2e/tests/pipelines.rs) read it.
set -euo pipefail
VERSION="${WEBHOOK_EXAMPLES_VERSION:-7.6.1}"
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/capstan/npm/webhooks-examples-$VERSION"
PKG="$DIR/node_modules/@octokit/webhooks-examples"
if [ ! -f "$PKG/api.github.com/index.json" ]; then
    if ! command -v npm >/dev/null; then
        echo "webhook-examples-setup: npm is missing (apt-get install npm)" >&2
        exit 1
    fi
    echo "webhook-examples-setup: npm install @octokit/webhooks-examples@$VERSION" >&2
    mkdir -p "$DIR"
    npm install --silent --no-audit --no-fund --prefix "$DIR" "@octokit/webhooks-examples@$VERSION" >&2
fi
[ -f "$PKG/api.github.com/index.json" ] || { echo "webhook-examples-setup: $PKG/api.github.com/index.json missing after install" >&2; exit 1; }
echo "CAPSTAN_WEBHOOK_EXAMPLES=$PKG/api.github.com"
