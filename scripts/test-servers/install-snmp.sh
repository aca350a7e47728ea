#!/usr/bin/env bash
# Installs the real SNMP servers that vigil's integration tests and benchmarks
# start on loopback (see tests/src/snmp_servers.rs):
#   - Debian's snmpd, the net-snmp tools (snmpget, snmpbulkwalk, ...) and
#     prometheus-snmp-exporter, with their system services left stopped;
#   - a Python venv holding snmpsim at $VIGIL_TEST_SERVERS_DIR/snmpsim-venv
#     (default <repo>/target/test-servers), readable by user nobody because
#     snmpsim drops to nobody after binding.
# Idempotent and quick when everything is already there; concurrent callers
# are serialised by a lock in that directory. Prints one line saying what it
# did. Needs root (apt-get) only when something is missing.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# snmpd lives in /usr/sbin, which a non-login PATH may lack.
export PATH=$PATH:/usr/sbin:/sbin

venv=$dir/snmpsim-venv
# What pip resolved for snmpsim 1.2.2 in November 2026 (pysmi is an undeclared
# dependency, cryptography is needed for v3 AES). The venv is rebuilt when
# these change (it keeps them in .vigil-stamp).
pip_pins=(snmpsim==1.2.2 pysnmp==7.1.30 pysmi==2.0.0 cryptography==50.0.2 pyasn1==0.6.5)
apt_packages=(snmpd snmp prometheus-snmp-exporter)

install_begin install-snmp install.lock 900

# --- Debian packages -------------------------------------------------------
missing=0
for bin in snmpd snmpbulkwalk snmpget prometheus-snmp-exporter; do
    command -v "$bin" >/dev/null 2>&1 || missing=1
done
if [[ $missing == 1 ]]; then
    apt_install "${apt_packages[@]}"
    did+=("apt-get installed ${apt_packages[*]}")
fi

# --- the packages' own services must not run -------------------------------
# Debian's snmpd service listens on udp port 161 (127.0.0.1 and [::1] with the
# shipped snmpd.conf, 0.0.0.0 with many others; tcp 199 for smux) and
# prometheus-snmp-exporter's on tcp :9116. Containers usually forbid starting
# them (policy-rc.d), but a machine with systemd or a permissive policy would
# have them running. Test instances only use free ephemeral ports, so a
# process of those names on these ports is the system service.
if [[ -d /run/systemd/system ]]; then
    for unit in snmpd prometheus-snmp-exporter; do
        if systemctl is-active --quiet "$unit" 2>/dev/null || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
            did+=("disabled the $unit service")
        fi
    done
fi
service_pids() {
    # PIDs of processes whose name starts with $1 (ss shows at most 15
    # characters) listening where the ss options and filter "${@:2}" say.
    ss -Hlnp "${@:2}" 2>/dev/null | grep -o "\"$1[^\"]*\",pid=[0-9]*" | grep -o '[0-9]*$' | sort -u || true
}
for _ in 1 2 3 4 5 6 7 8 9 10; do
    pids=$( (service_pids snmpd -u 'sport = :161'; service_pids snmpd -t 'sport = :199'
             service_pids prometheus-snmp -t 'sport = :9116') | sort -u)
    [[ -z $pids ]] && break
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    did+=("stopped the system service (pid $(paste -sd, <<<"$pids"))")
    sleep 0.5
done
[[ -z ${pids:-} ]] || fail "could not stop the system snmpd/snmp_exporter (pids $pids)"

# --- snmpsim venv ----------------------------------------------------------
ensure_venv "$venv" snmpsim snmpsim-command-responder 'snmpsim, pysnmp, pysmi, cryptography' "${pip_pins[@]}"

# --- readable by nobody ----------------------------------------------------
# The venv (and the path to it) must be readable by nobody, whom snmpsim
# becomes after binding: it imports modules lazily.
if [[ -n $(find "$venv" \( ! -perm -o+r -o \( -type d ! -perm -o+x \) \) -print -quit) ]]; then
    chmod -R o+rX "$venv"
    did+=("made the venv readable by nobody")
fi
d=$dir
while [[ $d != / ]]; do
    if [[ $(stat -c %A "$d") != d????????[xt]* ]]; then
        case $d in
            "$repo"/*|"$dir") chmod o+x "$d"; did+=("made $d traversable") ;;
            *) fail "$d is not traversable by user nobody; snmpsim could not read its venv" ;;
        esac
    fi
    d=$(dirname "$d")
done

install_end "$venv"
