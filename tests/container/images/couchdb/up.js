// Preloaded into pouchdb-server (node --require): CouchDB's GET /_up health
// endpoint, which pouchdb-server lacks and the compose healthcheck uses.
// Every Express application pouchdb-server creates answers it first.
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
