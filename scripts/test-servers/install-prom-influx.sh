#!/usr/bin/env bash
# Installs the metrics servers that vigil's sink tests start on loopback (see
# tests/src/metrics_servers.rs): Debian's prometheus, prometheus-pushgateway
# and influxdb (1.6), with their system services left stopped. Tests run
# their own instances on free ports with private data directories.
# Idempotent and quick when everything is already there; concurrent callers
# are serialised by a lock in $VIGIL_TEST_SERVERS_DIR (default
# <repo>/target/test-servers). Prints one line saying what it did. Needs root
# (apt-get) only when something is missing.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# influxd lives in /usr/bin, but keep /usr/sbin handy like the other scripts.
export PATH=$PATH:/usr/sbin:/sbin

apt_packages=(prometheus prometheus-pushgateway influxdb)

install_begin install-prom-influx install.lock 900

# --- Debian packages -------------------------------------------------------
missing=0
for bin in prometheus prometheus-pushgateway influxd; do
    command -v "$bin" >/dev/null 2>&1 || missing=1
done
if [[ $missing == 1 ]]; then
    apt_install "${apt_packages[@]}"
    did+=("apt-get installed ${apt_packages[*]}")
fi

# --- the packages' own services must not run -------------------------------
# Debian's services listen on the default ports: prometheus on tcp :9090,
# the pushgateway on :9091, influxd on :8086 (HTTP) and :8088 (RPC).
# Containers usually forbid starting them (policy-rc.d), but a machine with
# systemd or a permissive policy would have them running. Test instances
# only use free ephemeral ports, so a process of those names on these ports
# is the system service.
if [[ -d /run/systemd/system ]]; then
    for unit in prometheus prometheus-pushgateway influxdb; do
        if systemctl is-active --quiet "$unit" 2>/dev/null || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
            did+=("disabled the $unit service")
        fi
    done
fi
service_pids() {
    # PIDs of processes whose name starts with $1 (ss shows at most 15
    # characters) listening where the ss filter "${@:2}" says.
    ss -Hltnp "${@:2}" 2>/dev/null | grep -o "\"$1[^\"]*\",pid=[0-9]*" | grep -o '[0-9]*$' | sort -u || true
}
for _ in 1 2 3 4 5 6 7 8 9 10; do
    pids=$( (service_pids prometheus 'sport = :9090'; service_pids prometheus-push 'sport = :9091'
             service_pids influxd '( sport = :8086 or sport = :8088 )') | sort -u)
    [[ -z $pids ]] && break
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    did+=("stopped the system service (pid $(paste -sd, <<<"$pids"))")
    sleep 0.5
done
[[ -z ${pids:-} ]] || fail "could not stop the system prometheus/pushgateway/influxd (pids $pids)"

install_end "prometheus $(prometheus --version 2>&1 | head -n1 | cut -d' ' -f3), influxd $(influxd version 2>/dev/null | cut -d' ' -f2)"
