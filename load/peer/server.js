// The peer for the fan-out benchmark: a minimal, idiomatic `ws` broadcast server.
// Viewers connect to /v1/ws and send any message to subscribe; a feeder connects
// to /feed and every message it sends is broadcast as its own frame to every viewer.
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 8790);
const viewers = new Set();
const wss = new WebSocketServer({ port, host: '127.0.0.1', perMessageDeflate: false, clientTracking: false });

wss.on('connection', (ws, request) => {
  if (request.url.startsWith('/feed')) {
    ws.on('message', (data) => {
      for (const viewer of viewers) viewer.send(data, { binary: false });
    });
    return;
  }
  ws.once('message', () => {
    viewers.add(ws);
    ws.send('{"type":"subscribed","stream_id":"bench","recovered":true}');
  });
  ws.on('close', () => viewers.delete(ws));
});
wss.on('listening', () => console.log(`peer listening on ${port}`));
