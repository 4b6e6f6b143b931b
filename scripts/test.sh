#!/usr/bin/env bash
# The test command (README's second command; .ci/run runs exactly this).
# Installs what the tests need, starts the services they talk to (Podman's Docker API),
# builds the workspace once in debug, checks the generated CRDs, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
STATE="${CAPSTAN_TEST_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/capstan/test-services}"
eval "$(scripts/podman-setup.sh "$STATE/podman")"
export CAPSTAN_DOCKER_SOCKET CONTAINERS_CONF

echo "== build (debug, once)"
cargo build --workspace --all-targets --locked
echo "== generated CRDs match the types"
scripts/crdgen-check.sh
echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked -- --test-threads=2
