#!/usr/bin/env bash
# Installs what the network-namespace switch fixture needs (see
# tests/src/netns_switch.rs): Debian's snmpd and net-snmp tools, the perl
# AgentX bindings (libsnmp-perl) for BRIDGE-MIB, iproute2, socat and ping; and a
# patched copy of Debian's /usr/bin/snmp-bridge-mib (an AgentX subagent for
# one Linux bridge) at $VIGIL_TEST_SERVERS_DIR/snmp-bridge-mib-patched.
#
# The stock script reports learned MACs as `self` with no port, numbers
# bridge ports in perl hash order and caches for 60 s. The patch (verified
# in shared/notes/wave2-test-servers.md §2b): the cache time comes from
# $BRIDGE_MIB_CACHE_S (default 60), local MACs are the only `self` rows,
# and ports are numbered in kernel port order. The copy is remade when the
# stock script or this patch changes (a stamp records both).
# Idempotent and quick when everything is there; needs root (apt-get) only
# when something is missing.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH=$PATH:/usr/sbin:/sbin

apt_packages=(snmpd snmp libsnmp-perl iproute2 socat iputils-ping)
patch_version=1
stock=/usr/bin/snmp-bridge-mib
patched=$dir/snmp-bridge-mib-patched

install_begin install-netns install-netns.lock 900

missing=0
for bin in snmpd snmpwalk ip socat perl ping; do
    command -v "$bin" >/dev/null 2>&1 || missing=1
done
[[ -f $stock ]] || missing=1
perl -MNetSNMP::agent -e 1 >/dev/null 2>&1 || missing=1
if [[ $missing == 1 ]]; then
    apt_install "${apt_packages[@]}"
    did+=("apt-get installed ${apt_packages[*]}")
fi
[[ -f $stock ]] || fail "$stock is missing after installing snmp"

want="$(sha256sum "$stock" | cut -d' ' -f1) patch $patch_version"
if [[ ! -f $patched || ! -f $patched.stamp || $(<"$patched.stamp") != "$want" ]]; then
    start_log
    # perl, not python: perl is what the script itself needs anyway.
    STOCK=$stock OUT=$patched.tmp perl -e '
        local $/; open(my $in, "<", $ENV{STOCK}) or die "reading $ENV{STOCK}: $!";
        my $s = <$in>; close $in;
        my $n;
        $n = ($s =~ s/\$cache_timout=60;/\$cache_timout=defined(\$ENV{BRIDGE_MIB_CACHE_S}) ? \$ENV{BRIDGE_MIB_CACHE_S} : 60;/);
        die "patch 1 (cache) did not apply\n" unless $n == 1;
        $n = ($s =~ s/\t\tnext if \(\$local\);\n\t\t\$macs\{\$mac\}\{\$bridge\}=\$bridge;\n\t\t\$locals\{\$mac\}\{\$bridge\}=FDB_STATUS_SELF;\n/\t\tnext unless (\$local);\n\t\t\$locals{\$mac}{\$bridge}=FDB_STATUS_SELF;\n/);
        die "patch 2 (self rows) did not apply\n" unless $n == 1;
        $n = ($s =~ s/foreach my \$port \(keys %\{\$interfaces\{\$bridge\}\}\) \{/foreach my \$port (sort { \$a <=> \$b } keys %{\$interfaces{\$bridge}}) {/g);
        die "patch 3 (port order) applied $n times, expected 3\n" unless $n == 3;
        open(my $out, ">", $ENV{OUT}) or die "writing $ENV{OUT}: $!";
        print $out $s; close $out or die "writing $ENV{OUT}: $!";
    ' >>"$log" 2>&1 || fail "patching $stock failed"
    chmod 755 "$patched.tmp"
    mv "$patched.tmp" "$patched"
    printf '%s' "$want" >"$patched.stamp"
    did+=("patched $stock into $patched")
fi

install_end "$patched"
