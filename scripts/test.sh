#!/usr/bin/env bash
# The test command (README's second command; .ci/run runs exactly this).
# Installs what the tests need, starts the services they talk to (Podman's Docker API, an
# S3-compatible server for artifacts, PostgreSQL),
# builds the workspace once in debug, checks the generated CRDs, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
STATE="${CAPSTAN_TEST_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/capstan/test-services}"
eval "$(scripts/podman-setup.sh "$STATE/podman")"
export CAPSTAN_DOCKER_SOCKET CONTAINERS_CONF
eval "$(scripts/s3-setup.sh "$STATE/s3")"
export AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION CAPSTAN_TEST_S3_BUCKET
# PostgreSQL: the store and tracking API suites run once on SQLite and once on it.
eval "$(scripts/postgres-setup.sh)"
export CAPSTAN_TEST_POSTGRES_URL
# Real GitHub webhook payloads (@octokit/webhooks-examples) for tests/e2e/tests/pipelines.rs.
eval "$(scripts/webhook-examples-setup.sh)"
export CAPSTAN_WEBHOOK_EXAMPLES

# A real Kubernetes control plane (etcd, kube-apiserver, kwok) built from Go modules, cached.
eval "$(tests/cluster/up.sh "$STATE/cluster")"
export CAPSTAN_TEST_KUBECONFIG="$KUBECONFIG"
unset KUBECONFIG

# The Kubernetes controller suite is behind capstan-e2e's `cluster` feature; on here.
FEATURES="--features capstan-e2e/cluster"
echo "== web UI bundle (wasm; the build below embeds it)"
scripts/build-ui.sh
echo "== build (debug, once)"
cargo build --workspace --all-targets --locked $FEATURES
echo "== generated CRDs match the types"
scripts/crdgen-check.sh
echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked $FEATURES -- -D warnings
echo "== tests"
cargo test --workspace --locked $FEATURES -- --test-threads=2
