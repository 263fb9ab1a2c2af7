// Preloaded into pouchdb-server (node --require) to make it behave like the
// couchdb image where the compose file relies on it: CouchDB's GET /_up
// health endpoint, which pouchdb-server lacks and the compose healthcheck
// uses (every Express application pouchdb-server creates answers it first),
// and a clean exit on SIGTERM.
'use strict';
const path = require('path');
const Module = require('module');

const server_dir = path.join(__dirname, 'node_modules', 'pouchdb-server');
const express_path = Module.createRequire(path.join(server_dir, 'package.json')).resolve('express');
const express = require(express_path);

function with_up(...args) {
  const app = express(...args);
  app.get('/_up', (req, res) => {
    res.status(200).json({status: 'ok'});
  });
  return app;
}
Object.assign(with_up, express);
require.cache[express_path].exports = with_up;

// As PID 1 of a container node has no default action for SIGTERM: exit at
// once (LevelDB has every acknowledged write in its log file), so that
// `docker stop` does not wait out its timeout and SIGKILL.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
