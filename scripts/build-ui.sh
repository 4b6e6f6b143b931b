#!/usr/bin/env bash
# Builds the web UI's browser bundle (web-ui/app, package capstan-ui, feature `hydrate`) into
# the site directory the server embeds at compile time (web-ui/app/build.rs):
#   <target>/site/pkg/capstan_ui.js, capstan_ui_bg.wasm   (wasm-bindgen --target web)
#   <target>/site/pkg/uplot.min.js, uplot.min.css          (npm `uplot`, vendored)
# Run it before `cargo build` / `cargo run -- up` so the binary carries the bundle; without
# it the pages are still served, server-rendered, without interactivity.
#
# Tools are cached in ~/.cache/capstan/tools keyed by version, so a repeat run costs only
# the incremental wasm build:
#   - the wasm32-unknown-unknown target (rustup);
#   - wasm-bindgen-cli at exactly Cargo.lock's wasm-bindgen version (built from the crate's
#     source; its own lockfile pins a webpki-roots newer than the registry serves, so it is
#     built with webpki-roots pinned back: see /work/shared/ENVIRONMENT.md);
#   - uplot from the npm registry (tarball, no node needed at build time).
# Options: --release builds the wasm with the release profile (what the benchmark uses).
# Env: CAPSTAN_UI_SITE_DIR overrides the site directory (default <target>/site).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=debug
CARGO_PROFILE_ARGS=()
for arg in "$@"; do
    case "$arg" in
        --release) PROFILE=release; CARGO_PROFILE_ARGS=(--release) ;;
        *) echo "build-ui: unknown option $arg" >&2; exit 2 ;;
    esac
done

log() { echo "build-ui: $*" >&2; }
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/capstan"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
SITE="${CAPSTAN_UI_SITE_DIR:-$TARGET_DIR/site}"
UPLOT_VERSION="${UPLOT_VERSION:-1.6.32}"

# 1. the wasm target
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    log "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown >&2
fi

# 2. wasm-bindgen-cli at Cargo.lock's version
WB_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [ -z "$WB_VERSION" ]; then
    echo "build-ui: no wasm-bindgen in Cargo.lock" >&2
    exit 1
fi
WB_DIR="$CACHE/tools/wasm-bindgen-$WB_VERSION"
WB="$WB_DIR/bin/wasm-bindgen"
if ! [ -x "$WB" ] || [ "$("$WB" --version 2>/dev/null | awk '{print $2}')" != "$WB_VERSION" ]; then
    log "building wasm-bindgen-cli $WB_VERSION into $WB_DIR (several minutes, once)"
    cargo info "wasm-bindgen-cli@$WB_VERSION" >/dev/null
    SRC="$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name "wasm-bindgen-cli-$WB_VERSION" | head -1)"
    if [ -z "$SRC" ]; then
        echo "build-ui: wasm-bindgen-cli-$WB_VERSION source not found after cargo info" >&2
        exit 1
    fi
    WORK="$(mktemp -d)"
    cp -r "$SRC" "$WORK/src"
    (
        cd "$WORK/src"
        # The published lockfile pins a webpki-roots the registry no longer serves.
        if grep -q 'name = "webpki-roots"' Cargo.lock 2>/dev/null; then
            cargo update -q -p webpki-roots --precise 1.0.10 2>/dev/null || true
        fi
        CARGO_TARGET_DIR="$WORK/target" cargo install -q --path . --locked --root "$WB_DIR" --bin wasm-bindgen
    ) >&2
    rm -rf "$WORK"
fi

# 3. the hydrate library for wasm32
log "cargo rustc -p capstan-ui (wasm32, hydrate, $PROFILE)"
cargo rustc -p capstan-ui --lib --locked --target wasm32-unknown-unknown --no-default-features --features hydrate \
    "${CARGO_PROFILE_ARGS[@]}" --crate-type cdylib >&2
mkdir -p "$SITE/pkg"
"$WB" --target web --no-typescript --out-dir "$SITE/pkg" --out-name capstan_ui \
    "$TARGET_DIR/wasm32-unknown-unknown/$PROFILE/capstan_ui.wasm"

# 4. uPlot from npm, cached by version
UPLOT_DIR="$CACHE/npm/uplot-$UPLOT_VERSION"
if ! [ -f "$UPLOT_DIR/package/dist/uPlot.iife.min.js" ]; then
    log "fetching uplot $UPLOT_VERSION from the npm registry"
    mkdir -p "$UPLOT_DIR"
    REGISTRY="$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)"
    curl -fsSL "${REGISTRY%/}/uplot/-/uplot-$UPLOT_VERSION.tgz" | tar -xz -C "$UPLOT_DIR"
fi
cp "$UPLOT_DIR/package/dist/uPlot.iife.min.js" "$SITE/pkg/uplot.min.js"
cp "$UPLOT_DIR/package/dist/uPlot.min.css" "$SITE/pkg/uplot.min.css"
log "site ready in $SITE"
