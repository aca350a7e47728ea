#!/usr/bin/env bash
# The edit-test loop on this machine: for a one-line change (a new item) in
# one file, how long `cargo test -p <crate> --no-run` takes to have the
# crate's tests ready again, warm. Each case is changed twice; the second
# build is the one timed (the first settles feature unification).
# Restores every file it touches.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=(
  "crates/sinks/src/json_lines.rs vigil-sinks"
  "crates/filter/src/eval.rs vigil-filter"
  "crates/capabilities/src/clock.rs vigil-capabilities"
  "crates/cap-snmp/src/client.rs vigil-cap-snmp"
  "host/src/scheduler/claims.rs vigil-host"
)
probe() { printf '\n#[allow(dead_code)]\nconst EDIT_LOOP_PROBE: u32 = %s;\n' "$2" >> "$1"; }
for case in "${cases[@]}"; do
  set -- $case
  file=$1 crate=$2
  cp "$file" /tmp/edit-loop.orig
  trap 'cp /tmp/edit-loop.orig "$file"' EXIT
  probe "$file" 1
  cargo test -q -p "$crate" --no-run >/dev/null 2>&1
  cp /tmp/edit-loop.orig "$file"
  probe "$file" 2
  start=$(date +%s.%N)
  cargo test -q -p "$crate" --no-run >/dev/null 2>&1
  end=$(date +%s.%N)
  cp /tmp/edit-loop.orig "$file"
  trap - EXIT
  printf '%-40s cargo test -p %-20s --no-run: %6.1f s\n' "$file" "$crate" "$(echo "$end - $start" | bc)"
done
# The whole workspace's test binaries after a one-line change in the scheduler.
file=host/src/scheduler/claims.rs
cp "$file" /tmp/edit-loop.orig
trap 'cp /tmp/edit-loop.orig "$file"' EXIT
probe "$file" 3
cargo test -q --workspace --no-run >/dev/null 2>&1
cp /tmp/edit-loop.orig "$file"
probe "$file" 4
start=$(date +%s.%N)
cargo test -q --workspace --no-run >/dev/null 2>&1
end=$(date +%s.%N)
cp /tmp/edit-loop.orig "$file"
printf '%-40s cargo test --workspace --no-run: %6.1f s\n' "$file" "$(echo "$end - $start" | bc)"
