#!/usr/bin/env bash
# Debian packages the local stack needs: installed only when missing (apt-get update only then).
set -euo pipefail

PG_BIN_DIR="${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ -x "$PG_BIN_DIR/postgres" ] || missing+=(postgresql-15)
[ -x "$PG_BIN_DIR/psql" ] || command -v psql >/dev/null 2>&1 || missing+=(postgresql-client-15)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# The dashboard screenshot test and `make demo` screenshots: headless Debian chromium (fonts for readable charts).
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
# tests/test_compose.py validates docker-compose.yaml with it (no Docker engine needed to parse).
[ -x /usr/bin/docker-compose ] || missing+=(docker-compose)
# `sentencify stack up --secure`: the TLS terminator in front of the local Kafka broker.
command -v stunnel4 >/dev/null 2>&1 || missing+=(stunnel4)

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
echo "system packages: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "error: need root (or sudo) to install: ${missing[*]}; install them and re-run" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a system cluster; the stack runs its own private instance instead.
if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && command -v pg_ctlcluster >/dev/null; then
  $SUDO pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
fi
echo "system packages: done"
