#!/usr/bin/env bash
# The main job on a fresh machine: builds vigil and its bundled plugins,
# starts a simulated SNMP agent serving real device recordings, then runs the
# bundled example site (plugin-configs/site.toml) until Ctrl-C.
# Needs the Rust toolchain pinned in rust-toolchain.toml; the SNMP agent
# (snmpsim, installed on first use by scripts/test-servers/install-snmp.sh)
# needs root for its one-time install. Without it vigil still runs, and the
# SNMP devices report polling status "timeout".
set -euo pipefail
cd "$(dirname "$0")/.."

AGENT_PORT=16161
AGENT_DIR=target/example-agent

rustup target add wasm32-wasip2 >/dev/null
echo "==> building the bundled plugins (wasm32-wasip2)" >&2
(cd plugins && cargo build --release --locked --target wasm32-wasip2 --target-dir ../target/wasm-plugins)
echo "==> building vigil" >&2
cargo build --profile release-dev --locked -p vigil-host

agent_pid=""
start_agent() {
    scripts/test-servers/install-snmp.sh >&2 || return 1
    local venv=target/test-servers/snmpsim-venv
    local recorded
    recorded=$(find "$venv/lib" -path '*snmpsim/data/recorded' -type d | head -n 1)
    [ -n "$recorded" ] || return 1
    rm -rf "$AGENT_DIR"
    mkdir -p "$AGENT_DIR/data" "$AGENT_DIR/cache"
    # One community per device, named after the resource it plays.
    cp tests/fixtures/snmp/juniper-mx.snmprec "$AGENT_DIR/data/lab1-edge-01.snmprec"
    cp tests/fixtures/snmp/cisco.snmprec "$AGENT_DIR/data/lab1-access-01.snmprec"
    cp "$recorded/linux-full-walk.snmprec" "$AGENT_DIR/data/lab1-server-01.snmprec"
    cp tests/fixtures/snmp/generic-switch.snmprec "$AGENT_DIR/data/lab2-ro.snmprec"
    chmod -R a+rX "$AGENT_DIR" && chmod 0777 "$AGENT_DIR/cache"
    local user=()
    [ "$(id -u)" -eq 0 ] && user=(--process-user=nobody --process-group=nogroup)
    "$venv/bin/snmpsim-command-responder" --data-dir="$AGENT_DIR/data" \
        --cache-dir="$AGENT_DIR/cache" --agent-udpv4-endpoint="127.0.0.1:$AGENT_PORT" \
        "${user[@]}" >"$AGENT_DIR/agent.log" 2>&1 &
    agent_pid=$!
}
stop_agent() { [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true; }
trap stop_agent EXIT

echo "==> starting a simulated SNMP agent on 127.0.0.1:$AGENT_PORT (real device recordings)" >&2
if ! start_agent; then
    echo "    (could not install or start snmpsim; SNMP devices will show polling status 3, timeout)" >&2
fi

echo "==> vigil run (metrics groups stream to stdout as JSON lines; Ctrl-C stops)" >&2
target/release-dev/vigil --site plugin-configs/site.toml run
