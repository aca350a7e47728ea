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
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
venv=$dir/nx27017-venv
# What pip resolved for nx-27017 0.8.1 in November 2026. The venv is rebuilt
# when these change (it keeps them in .vigil-stamp).
pip_pins=(nx-27017==0.8.1 neosqlite==1.17.2 pymongo==4.20.0 dnspython==2.9.2)

install_begin install-mongo install.lock 900

# --- nx-27017 venv ---------------------------------------------------------
ensure_venv "$venv" nx-27017 nx-27017 'nx_27017, neosqlite, pymongo' "${pip_pins[@]}"

install_end "$venv"
