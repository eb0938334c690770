#!/usr/bin/env bash
# MongoDB as a one-member replica set (transactions and change streams need one) with auth.
# A replica set with auth needs a key file: made once, kept in the config volume.
set -euo pipefail
KEY=/data/configdb/keyfile
if [ ! -f "$KEY" ]; then
  head -c 756 /dev/urandom | base64 -w 0 > "$KEY"
fi
chmod 400 "$KEY"
chown mongodb:mongodb "$KEY"
exec docker-entrypoint.sh mongod --replSet rs0 --bind_ip_all --keyFile "$KEY"
