# shellcheck shell=bash
# What the install scripts in this directory share; sourced by them, not run.
# It sets `repo` (the workspace root) and `dir` ($VIGIL_TEST_SERVERS_DIR,
# default <repo>/target/test-servers), and offers:
#   install_begin NAME LOCK WAIT  start the clock, lock, log to $dir/NAME.log
#   fail MESSAGE                  say why (and the log's tail), exit 1
#   start_log                     empty the log on the first call of a run
#   apt_install PACKAGE...        apt-get install (after an update if need be)
#   ensure_venv ...               a pinned venv from Debian's python
#   install_end WHAT              the one-line summary
# Each step that did something appends to the array `did`.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${VIGIL_TEST_SERVERS_DIR:-$repo/target/test-servers}

# install_begin NAME LOCK WAIT: notes the start time, sets `log` to
# $dir/NAME.log (NAME also prefixes every message), creates $dir and takes
# the lock $dir/LOCK (file descriptor 9, held until the script exits),
# waiting at most WAIT seconds for another holder.
install_begin() {
    install_name=$1
    local lock=$dir/$2 wait=$3
    started=${EPOCHREALTIME/./}
    did=()
    log=$dir/$install_name.log
    mkdir -p "$dir"
    exec 9>>"$lock"
    if ! flock -n 9; then
        flock -w "$wait" 9 || { echo "$install_name: timed out waiting for $lock" >&2; exit 1; }
        local waited=$(( (${EPOCHREALTIME/./} - started) / 1000 ))
        did_wait="waited ${waited} ms for another install; "
    fi
}

fail() {
    echo "$install_name: $*" >&2
    if [[ -s $log ]]; then
        echo "$install_name: last lines of $log:" >&2
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

# venv_ok VENV PROGRAM IMPORTS PIN...: whether VENV has bin/PROGRAM, imports
# IMPORTS (a Python import list) and was made with exactly these pins (it
# keeps them in .vigil-stamp).
venv_ok() {
    local venv=$1 program=$2 imports=$3
    shift 3
    [[ -x $venv/bin/$program && -f $venv/.vigil-stamp ]] \
        && [[ $(<"$venv/.vigil-stamp") == "$*" ]] \
        && "$venv/bin/python" -c "import $imports" >/dev/null 2>&1
}

# ensure_venv VENV LABEL PROGRAM IMPORTS PIN...: unless venv_ok, (re)makes
# VENV with `pip install PIN...` and says "created the LABEL venv".
ensure_venv() {
    local venv=$1 label=$2 program=$3 imports=$4
    shift 4
    venv_ok "$venv" "$program" "$imports" "$@" && return 0
    start_log
    # Debian's python, not a pyenv one from someone's home directory: the
    # venv must keep working whoever runs the tests.
    if ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv
        did+=("apt-get installed python3-venv")
    fi
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv" >>"$log" 2>&1 || fail "python3 -m venv $venv failed"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@" >>"$log" 2>&1 \
        || fail "pip install $* failed"
    printf '%s' "$*" >"$venv/.vigil-stamp"
    venv_ok "$venv" "$program" "$imports" "$@" \
        || fail "the $label venv at $venv does not import ${imports%%,*}"
    did+=("created the $label venv")
}

# install_end WHAT: prints "NAME: [waited ...; ]what it did in N.NNNs", or
# "everything already installed (WHAT)" when it did nothing.
install_end() {
    local ms=$(( (${EPOCHREALTIME/./} - started) / 1000 ))
    local elapsed msg
    elapsed=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
    if [[ ${#did[@]} -eq 0 ]]; then
        echo "$install_name: ${did_wait:-}everything already installed ($1) in ${elapsed}s"
    else
        msg=$(printf '%s; ' "${did[@]}")
        echo "$install_name: ${did_wait:-}${msg%; } in ${elapsed}s"
    fi
}
