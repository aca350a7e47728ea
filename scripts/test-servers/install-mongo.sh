#!/usr/bin/env bash
# Installs the MongoDB wire-protocol server that vigil's storage tests start
# on loopback (see tests/src/mongo_servers.rs). No mongod is installable from
# any registry here, so the tests use nx-27017 (PyPI): a MongoDB-compatible
# server written in Python on top of SQLite, run with `--db memory`.
#   - a Python venv holding nx-27017 at $VIGIL_TEST_SERVERS_DIR/nx27017-venv
#     (default <repo>/target/test-servers), made from Debian's /usr/bin/python3
#     (python3-venv is apt-installed when missing).
# Idempotent and quick when everything is already there; concurrent callers
# (and install-snmp.sh) are serialised by a lock in that directory. Prints one
# line saying what it did. Needs root (apt-get) only when python3-venv is
# missing; needs PyPI only when the venv is missing or its pins changed.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${VIGIL_TEST_SERVERS_DIR:-$repo/target/test-servers}
venv=$dir/nx27017-venv
# What pip resolved for nx-27017 0.8.1 in November 2026. The venv is rebuilt
# when these change (it keeps them in .vigil-stamp).
pip_pins=(nx-27017==0.8.1 neosqlite==1.17.2 pymongo==4.20.0 dnspython==2.9.2)

started=${EPOCHREALTIME/./}
did=()
log=$dir/install-mongo.log

mkdir -p "$dir"
exec 9>>"$dir/install.lock"
if ! flock -n 9; then
    flock -w 900 9 || { echo "install-mongo: timed out waiting for $dir/install.lock" >&2; exit 1; }
    waited=$(( (${EPOCHREALTIME/./} - started) / 1000 ))
    did_wait="waited ${waited} ms for another install; "
fi

fail() {
    echo "install-mongo: $*" >&2
    if [[ -s $log ]]; then
        echo "install-mongo: last lines of $log:" >&2
        tail -n 30 "$log" >&2
    fi
    exit 1
}

# The log keeps the output of the last run that had something to do.
log_started=0
start_log() {
    [[ $log_started == 1 ]] || : >"$log"
    log_started=1
}

apt_install() {
    start_log
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if ! apt-get install "${opts[@]}" "$@" >>"$log" 2>&1; then
        apt-get update -q >>"$log" 2>&1 || fail "apt-get update failed"
        apt-get install "${opts[@]}" "$@" >>"$log" 2>&1 || fail "apt-get install $* failed"
    fi
}

# --- nx-27017 venv ---------------------------------------------------------
stamp="${pip_pins[*]}"
venv_ok() {
    [[ -x $venv/bin/nx-27017 && -f $venv/.vigil-stamp ]] \
        && [[ $(<"$venv/.vigil-stamp") == "$stamp" ]] \
        && "$venv/bin/python" -c 'import nx_27017, neosqlite, pymongo' >/dev/null 2>&1
}
if ! venv_ok; then
    start_log
    # Debian's python, not a pyenv one from someone's home directory: the
    # venv must keep working whoever runs the tests.
    if ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv
        did+=("apt-get installed python3-venv")
    fi
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv" >>"$log" 2>&1 || fail "python3 -m venv $venv failed"
    "$venv/bin/pip" install -q --disable-pip-version-check "${pip_pins[@]}" >>"$log" 2>&1 \
        || fail "pip install ${pip_pins[*]} failed"
    printf '%s' "$stamp" >"$venv/.vigil-stamp"
    venv_ok || fail "the nx-27017 venv at $venv does not import nx_27017"
    did+=("created the nx-27017 venv")
fi

ms=$(( (${EPOCHREALTIME/./} - started) / 1000 ))
elapsed=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
if [[ ${#did[@]} -eq 0 ]]; then
    echo "install-mongo: ${did_wait:-}everything already installed ($venv) in ${elapsed}s"
else
    msg=$(printf '%s; ' "${did[@]}")
    echo "install-mongo: ${did_wait:-}${msg%; } in ${elapsed}s"
fi
