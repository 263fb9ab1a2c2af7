#!/bin/bash
# Starts pouchdb-server the way the official couchdb image starts CouchDB:
# port 5984 on all interfaces, databases in /opt/couchdb/data, and the admin
# account from COUCHDB_USER / COUCHDB_PASSWORD (pouchdb-server hashes the
# plain-text password of its config file on start, as CouchDB does).
set -euo pipefail
: "${COUCHDB_USER:?the stand-in needs COUCHDB_USER}"
: "${COUCHDB_PASSWORD:?the stand-in needs COUCHDB_PASSWORD}"
run=/var/lib/pouchdb
node -e '
  const fs = require("fs");
  const config = {admins: {[process.env.COUCHDB_USER]: process.env.COUCHDB_PASSWORD},
                  log: {file: process.argv[1] + "/log.txt"}};
  fs.writeFileSync(process.argv[1] + "/config.json", JSON.stringify(config), {mode: 0o600});
' "$run"
unset COUCHDB_PASSWORD
exec node --require /opt/pouchdb/up.js /opt/pouchdb/node_modules/pouchdb-server/bin/pouchdb-server \
  --host 0.0.0.0 --port 5984 --dir /opt/couchdb/data --config "$run/config.json" --no-color
