#!/usr/bin/env bash
# The main job on a fresh machine: builds vigil and its bundled plugins,
# checks the bundled plugin configs and runs each polling plugin once in the
# sandbox. Needs only the Rust toolchain pinned in rust-toolchain.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
echo "==> building the bundled plugins (wasm32-wasip2)"
(cd plugins && cargo build --release --locked --target wasm32-wasip2 --target-dir ../target/wasm-plugins)
echo "==> building vigil"
cargo build --release --locked -p vigil-host
vigil=target/release/vigil

echo "==> vigil plugins list"
"$vigil" --site plugin-configs/site.toml plugins list
for plugin in plugin-configs/*.vigil-plugin; do
    echo "==> vigil plugins check $plugin"
    "$vigil" --site plugin-configs/site.toml plugins check "$plugin"
    echo "==> vigil plugins run $plugin"
    "$vigil" --site plugin-configs/site.toml plugins run "$plugin" --resource-id example-switch
done
