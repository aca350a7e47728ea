#!/usr/bin/env bash
# The main job on a fresh machine: builds vigil and its bundled plugins, then
# runs the bundled example site (plugin-configs/site.toml) until Ctrl-C.
# Needs only the Rust toolchain pinned in rust-toolchain.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
echo "==> building the bundled plugins (wasm32-wasip2)" >&2
(cd plugins && cargo build --release --locked --target wasm32-wasip2 --target-dir ../target/wasm-plugins)
echo "==> building vigil" >&2
cargo build --release --locked -p vigil-host
echo "==> vigil run (metrics groups stream to stdout as JSON lines; Ctrl-C stops)" >&2
exec target/release/vigil --site plugin-configs/site.toml run
