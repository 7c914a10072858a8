// MQTT.js over WebSocket for tests/ws_clients.rs:
//   node ws_client.js URL PROTOCOL_VERSION [CA_FILE]
// Subscribes to mqttjs/# (QoS 1), publishes one QoS 0 and one QoS 1 message to it, prints
// one line "MSG topic payload qos" per message received and "DONE" once both came back and
// the client closed cleanly. Any error or a 10 s deadline exits non-zero.
'use strict';
const fs = require('fs');
const mqtt = require('mqtt');

const [url, version, ca] = process.argv.slice(2);
const opts = {
  protocolVersion: Number(version),
  clientId: `mqttjs-${version}-${process.pid}`,
  reconnectPeriod: 0,
  connectTimeout: 5000,
};
if (ca) opts.ca = fs.readFileSync(ca);
const deadline = setTimeout(() => { console.log('TIMEOUT'); process.exit(3); }, 10000);
const client = mqtt.connect(url, opts);
client.on('error', (e) => { console.log(`ERROR ${e.message}`); process.exit(1); });
client.on('connect', () => {
  client.subscribe('mqttjs/#', { qos: 1 }, (err, granted) => {
    if (err) { console.log(`ERROR subscribe ${err.message}`); process.exit(1); }
    console.log(`SUBACK ${granted.map((g) => g.qos).join(',')}`);
    client.publish('mqttjs/zero', 'q0', { qos: 0 });
    client.publish('mqttjs/one', 'q1', { qos: 1 }, (e) => {
      if (e) { console.log(`ERROR publish ${e.message}`); process.exit(1); }
      console.log('PUBACK');
      done();
    });
  });
});
// Both messages back and the QoS 1 publish acknowledged: close cleanly.
let events = 0;
function done() {
  if (++events === 3) client.end(false, () => { clearTimeout(deadline); console.log('DONE'); });
}
client.on('message', (topic, payload, packet) => {
  console.log(`MSG ${topic} ${payload.toString()} ${packet.qos}`);
  done();
});
