#!/usr/bin/env bash
# Installs, only when missing, the servers that the integration tests start on their own ports
# and data dirs: Redis, ZooKeeper (Debian's package, with a Java runtime), PostgreSQL, MariaDB.
# The tests never use the machine's own running instances.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v mariadb-install-db >/dev/null 2>&1 || command -v mysql_install_db >/dev/null 2>&1 || need+=(mariadb-server)

# `--bench` also installs the peers the benchmarks compare against (etcd 3.4 from Debian).
if [ "${1:-}" = "--bench" ]; then
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
fi

if [ ${#need[@]} -eq 0 ]; then
  echo "test servers: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing packages ${need[*]} and not root: install them with apt-get" >&2
  exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
