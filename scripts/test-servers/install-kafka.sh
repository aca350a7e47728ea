#!/usr/bin/env bash
# Installs the Kafka-API broker that vigil's integration tests start on
# loopback (see tests/src/kafka_servers.rs): tansu 0.6.0, a Kafka-compatible
# broker written in Rust, run with its in-memory storage engine (which needs
# the `dynostore` feature). The binary goes to
# $VIGIL_TEST_SERVERS_DIR/bin/tansu (default <repo>/target/test-servers):
#   - copied from the prebuilt shared binary when one is found with the
#     pinned sha256: $VIGIL_SHARED_DIR/bin/tansu, ../shared/bin/tansu beside
#     the repository, or /work/shared/bin/tansu (where a CI clone elsewhere
#     still finds it);
#   - else copied from this machine's build cache
#     (${XDG_CACHE_HOME:-~/.cache}/vigil-test-servers/tansu-0.6.0), so a
#     fresh clone never builds it twice;
#   - otherwise built there with
#     `cargo install tansu --version 0.6.0 --locked --features dynostore`
#     (about 30 minutes on a cold machine; its output goes to
#     install-kafka.log).
# Idempotent and quick when the binary is already there; concurrent callers
# are serialised by a lock in that directory (install-kafka.lock). Prints one
# line saying what it did. Needs no root.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bin=$dir/bin/tansu
version=0.6.0
# The prebuilt binary shared beside the repository (crates.io tansu 0.6.0
# built with --features dynostore, stripped, x86_64 Linux); its checksum as
# published in ../shared/README.md.
shared_sha256=d45c5798bb85ab31f31a787f6ee86dea13e7a3fbcf0ca79bdc7312d1b3ed0e74
shared=""
for candidate in ${VIGIL_SHARED_DIR:+"$VIGIL_SHARED_DIR/bin/tansu"} "$(dirname "$repo")/shared/bin/tansu" /work/shared/bin/tansu; do
    if [[ -f $candidate ]] && [[ $(sha256sum "$candidate" | cut -d' ' -f1) == "$shared_sha256" ]]; then
        shared=$candidate
        break
    fi
done
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vigil-test-servers/tansu-$version

mkdir -p "$dir/bin"
# A lock of its own: a cold `cargo install` holds it for half an hour, which
# must not hold up the other install scripts (they share install.lock).
install_begin install-kafka install-kafka.lock 3600

# Whether $1 is a tansu of the pinned version.
is_tansu() {
    [[ -x $1 ]] && [[ $("$1" --version 2>/dev/null) == "tansu $version" ]]
}

if ! is_tansu "$bin"; then
    start_log
    rm -f "$bin"
    if [[ -n $shared ]]; then
        # Copy to a temporary name first, so a concurrent reader never sees
        # half a binary.
        cp "$shared" "$bin.tmp.$$"
        chmod 755 "$bin.tmp.$$"
        mv -f "$bin.tmp.$$" "$bin"
        is_tansu "$bin" || fail "$shared (sha256 $shared_sha256) copied to $bin does not report tansu $version"
        did+=("copied $shared to $bin")
    elif is_tansu "$cache/bin/tansu"; then
        cp "$cache/bin/tansu" "$bin.tmp.$$"
        mv -f "$bin.tmp.$$" "$bin"
        did+=("copied $cache/bin/tansu (built earlier on this machine) to $bin")
    else
        mkdir -p "$cache"
        command -v cargo >/dev/null 2>&1 || fail "cargo is not on PATH (needed to build tansu $version)"
        # Its own target directory: the build neither waits on nor fills the
        # workspace's, and a second attempt after a failure reuses it.
        (cd "$cache" && cargo install tansu --version "$version" --locked --features dynostore \
            --root "$cache" --target-dir "$cache/tansu-build") >>"$log" 2>&1 \
            || fail "cargo install tansu --version $version --locked --features dynostore failed"
        is_tansu "$cache/bin/tansu" || fail "cargo install did not leave tansu $version at $cache/bin/tansu"
        rm -rf "$cache/tansu-build"
        cp "$cache/bin/tansu" "$bin.tmp.$$"
        mv -f "$bin.tmp.$$" "$bin"
        did+=("built tansu $version with cargo install into $bin")
    fi
fi

install_end "$bin"
