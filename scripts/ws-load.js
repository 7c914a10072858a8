#!/usr/bin/env node
// WebSocket (or TCP) MQTT load client, independent of the broker and of ringmq-load: MQTT.js
// from tests/js/node_modules (`cd tests/js && npm install --no-audit --no-fund --no-package-lock`).
//
//   node scripts/ws-load.js --url ws://127.0.0.1:8080/mqtt [--pairs 100] [--rate 2000]
//        [--duration 15] [--qos 0|1] [--size 64] [--version 4|5] [--drain 5] [--json FILE]
//
// --pairs N publisher/subscriber pairs, each client its own connection (2N in all); pair i
// publishes to and subscribes to `wsload/<run>/<i>`. Open loop at a fixed total --rate: message
// k is due at start + k/rate and goes to publisher k mod N, whatever the broker does, so a
// broker that falls behind shows it in latency and loss, not in a lower offered rate. Each
// payload is stamped with its pair, sequence number and intended send time; latency is
// receive time minus intended send time (the client's own lag is included, not hidden).
// After --duration seconds it stops sending and waits up to --drain seconds for the rest.
//
// Node runs the whole client on one thread: the report gives its own CPU use (process
// cpuUsage over the run, in % of one core) and its timer lag, so a run where the client, not
// the broker, was the limit can be told apart (client_cpu_pct near 100, many late sends).
//
// Prints one JSON object on stdout (and to --json FILE): sent, acked (QoS 1), received, lost
// (sent but not received by the end of the drain), duplicates, late_sends (sent more than
// 5 ms after their intended time), max_lag_ms and max_lag_at_s (the client's worst lag and
// when), latency p50/p99/p999/max in microseconds, client_cpu_s and client_cpu_pct. Exit 0; 2 if a QoS 1
// message was lost; 3 if the connect phase or the whole run hit its deadline (partial report).
// Bounded: every wait has a deadline; the process exits by itself.
'use strict';
const path = require('path');
const fs = require('fs');

function requireMqtt() {
  const candidates = [
    path.join(__dirname, '..', 'tests', 'js', 'node_modules', 'mqtt'),
    'mqtt',
  ];
  for (const c of candidates) {
    try { return require(c); } catch (e) { /* next */ }
  }
  console.error('ws-load: MQTT.js not found; run: cd tests/js && npm install --no-audit --no-fund --no-package-lock');
  process.exit(1);
}
const mqtt = requireMqtt();

function parseArgs(argv) {
  const o = {
    url: 'ws://127.0.0.1:8080/mqtt', pairs: 100, rate: 2000, duration: 15, qos: 0, size: 64,
    version: 4, drain: 5, json: '', connectTimeout: 20,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(k in o) || i + 1 >= argv.length) { console.error(`ws-load: bad argument ${argv[i]}`); process.exit(1); }
    o[k] = typeof o[k] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (o.size < 24) o.size = 24;
  if (![0, 1].includes(o.qos)) { console.error('ws-load: --qos 0 or 1'); process.exit(1); }
  return o;
}
const opt = parseArgs(process.argv.slice(2));
const run = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
const nowNs = () => process.hrtime.bigint();
const MAGIC = 0x57534c44; // "WSLD"
const perPair = Math.ceil((opt.rate * opt.duration) / opt.pairs) + 2;

const stats = {
  sent: 0, acked: 0, received: 0, duplicates: 0, foreign: 0, late_sends: 0, max_lag_ms: 0, max_lag_at_s: 0,
  send_errors: 0, client_errors: 0, closes: 0,
};
const seen = []; // per pair: one byte per sequence number
const latUs = new Float64Array(Math.min(opt.rate * opt.duration + 16, 4_000_000));
let latN = 0;
let t0 = 0n; // run start (ns), set when publishing starts
const subs = [];
const pubs = [];
let phase = 'connect';

let reported = false;
function report(code) {
  if (reported) return;
  reported = true;
  const lat = latUs.subarray(0, latN).sort();
  const q = (p) => (latN ? Math.round(lat[Math.min(latN - 1, Math.floor(p * latN))]) : 0);
  const cpu = process.cpuUsage(cpu0);
  const wall = Number(nowNs() - wall0) / 1e9;
  const out = {
    url: opt.url, pairs: opt.pairs, qos: opt.qos, size: opt.size, version: opt.version,
    rate: opt.rate, duration_s: opt.duration, phase,
    sent: stats.sent, acked: stats.acked, received: stats.received,
    lost: Math.max(0, stats.sent - stats.received), duplicates: stats.duplicates,
    late_sends: stats.late_sends, max_lag_ms: Math.round(stats.max_lag_ms * 10) / 10,
    max_lag_at_s: Math.round(stats.max_lag_at_s * 100) / 100,
    latency_p50_us: q(0.5), latency_p99_us: q(0.99), latency_p999_us: q(0.999),
    latency_max_us: latN ? Math.round(lat[latN - 1]) : 0,
    send_errors: stats.send_errors, client_errors: stats.client_errors, closes: stats.closes,
    client_cpu_s: Math.round((cpu.user + cpu.system) / 1e4) / 100,
    client_cpu_pct: Math.round(((cpu.user + cpu.system) / 1e6 / wall) * 1000) / 10,
    wall_s: Math.round(wall * 100) / 100,
  };
  const line = JSON.stringify(out);
  if (opt.json) fs.writeFileSync(opt.json, `${line}\n`);
  console.log(line);
  for (const c of subs.concat(pubs)) { if (c) { try { c.end(true); } catch (e) { /* closing */ } } }
  const rc = code === 0 && opt.qos === 1 && out.lost > 0 ? 2 : code;
  setTimeout(() => process.exit(rc), 200);
}

let cpu0 = process.cpuUsage();
let wall0 = nowNs();
const hardDeadline = setTimeout(() => { console.error('ws-load: run deadline'); report(3); },
  (opt.connectTimeout + opt.duration + opt.drain + 10) * 1000);

function connect(id) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(opt.url, {
      clientId: id, protocolVersion: opt.version, clean: true, keepalive: 60,
      reconnectPeriod: 0, connectTimeout: opt.connectTimeout * 1000,
    });
    c.once('connect', () => resolve(c));
    c.on('error', (e) => { stats.client_errors++; if (phase === 'connect') reject(e); });
    c.on('close', () => { if (phase !== 'done') stats.closes++; });
  });
}

function onMessage(i, topic, payload) {
  const t = nowNs();
  if (payload.length < 20 || payload.readUInt32BE(0) !== MAGIC || payload.readUInt32BE(4) !== i) {
    stats.foreign++;
    return;
  }
  const seq = payload.readUInt32BE(8);
  const intended = payload.readBigUInt64BE(12);
  const s = seen[i];
  if (seq < s.length) {
    if (s[seq]) { stats.duplicates++; return; }
    s[seq] = 1;
  }
  stats.received++;
  if (latN < latUs.length) latUs[latN++] = Number(t - t0 - intended) / 1000;
  if (phase === 'drain' && allIn()) finish();
}

async function main() {
  const topic = (i) => `wsload/${run}/${i}`;
  // Subscribers first (each subscribed before any publisher starts), a few at a time.
  const batch = 25;
  const connectDeadline = setTimeout(() => { console.error('ws-load: connect deadline'); report(3); },
    opt.connectTimeout * 1000);
  for (let b = 0; b < opt.pairs; b += batch) {
    const ids = [];
    for (let i = b; i < Math.min(opt.pairs, b + batch); i++) ids.push(i);
    await Promise.all(ids.map(async (i) => {
      seen[i] = new Uint8Array(perPair);
      const c = await connect(`wsl-s-${run}-${i}`);
      c.on('message', (t, p) => onMessage(i, t, p));
      await new Promise((res, rej) => c.subscribe(topic(i), { qos: opt.qos }, (e) => (e ? rej(e) : res())));
      subs[i] = c;
    }));
  }
  for (let b = 0; b < opt.pairs; b += batch) {
    const ids = [];
    for (let i = b; i < Math.min(opt.pairs, b + batch); i++) ids.push(i);
    await Promise.all(ids.map(async (i) => { pubs[i] = await connect(`wsl-p-${run}-${i}`); }));
  }
  clearTimeout(connectDeadline);

  // Publishing: open loop, checked every millisecond (Node's timer granularity).
  phase = 'run';
  cpu0 = process.cpuUsage();
  wall0 = nowNs();
  t0 = nowNs();
  const total = Math.floor(opt.rate * opt.duration);
  const nsPer = 1e9 / opt.rate;
  const seqs = new Uint32Array(opt.pairs);
  const body = Buffer.alloc(opt.size - 20, 'x');
  let k = 0;
  const tick = () => {
    const now = Number(nowNs() - t0);
    while (k < total && k * nsPer <= now) {
      const i = k % opt.pairs;
      const intended = Math.round(k * nsPer);
      const lagMs = (now - intended) / 1e6;
      if (lagMs > 5) stats.late_sends++;
      if (lagMs > stats.max_lag_ms) { stats.max_lag_ms = lagMs; stats.max_lag_at_s = intended / 1e9; }
      const p = Buffer.allocUnsafe(opt.size);
      p.writeUInt32BE(MAGIC, 0);
      p.writeUInt32BE(i, 4);
      p.writeUInt32BE(seqs[i]++, 8);
      p.writeBigUInt64BE(BigInt(intended), 12);
      body.copy(p, 20);
      pubs[i].publish(topic(i), p, { qos: opt.qos }, (e) => {
        if (e) stats.send_errors++;
        else if (opt.qos) { stats.acked++; if (phase === 'drain' && allIn()) finish(); }
      });
      stats.sent++;
      k++;
    }
    if (k < total) setTimeout(tick, 1);
    else {
      phase = 'drain';
      if (allIn()) finish();
      else setTimeout(finish, opt.drain * 1000);
    }
  };
  setTimeout(tick, 1);
}

// Everything sent has arrived (and, at QoS 1, been acknowledged to its publisher).
function allIn() {
  return stats.received >= stats.sent && (opt.qos === 0 || stats.acked >= stats.sent);
}

let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  phase = 'done';
  clearTimeout(hardDeadline);
  report(0);
}

main().catch((e) => { console.error(`ws-load: ${e.message}`); report(3); });
