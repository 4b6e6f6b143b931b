#!/usr/bin/env bash
# Fails (exit 1) when helm/capstan/crds/ does not match the CRDs generated from crds/src.
# Fix with: cargo run -p capstan-crds --bin crdgen -- --out helm/capstan/crds
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet -p capstan-crds --bin crdgen -- --out helm/capstan/crds --check
