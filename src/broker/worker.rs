//! The io_uring shell of one worker: the engine's [`Handler`] that turns callbacks into
//! [`Input`]s for the worker's [`Core`] and carries out the [`Effect`]s it returns, in
//! [`Worker::execute`], the one place they are executed.
//!
//! The listener layers live here, between the engine and the core, as [`Layers`] per engine
//! listener:
//! - PROXY protocol (`crate::proxy`): connections accepted on a listener named in
//!   `proxy_protocol_listeners` get a `Proxy` entry while their v1/v2 header is being read.
//!   It comes first on the socket, before any TLS or WebSocket byte: once it is complete the
//!   entry goes, the header's source address replaces the socket's peer (as `Input::Peer`,
//!   where the engine collects peers: the failed-login limit; and for the WebSocket layer's
//!   `X-Forwarded-For` trust) and the bytes after it go on to the next layer. A bad header
//!   closes the socket; so does the connect timeout, for a header that never completes.
//! - TLS: connections accepted on a TLS listener get a `TlsConn`; their bytes are decrypted
//!   before `Input::Bytes` and every `Effect::Send` is encrypted before it is queued. A
//!   handshake failure closes the socket at once (the core learns of it as a lost
//!   connection).
//! - WebSocket (`crate::ws`): connections accepted on a WebSocket listener get a `WsConn`;
//!   their bytes (after TLS on a `wss_listen` listener) go through the HTTP upgrade and the
//!   frame decoder before `Input::Bytes`, every `Effect::Send` becomes one binary frame
//!   (then TLS), and `Effect::Close` sends a close frame first. A refused upgrade gets its
//!   HTTP status, a bad frame its close code, then the socket is closed.
//!
//! Any bytes from the client count as activity for keep-alive, also those that carry no MQTT
//! byte yet (a TLS record, a WebSocket ping or partial frame): an empty `Input::Bytes` says so.
//! Plain connections pay nothing for the layers (their states are in maps keyed by slot,
//! consulted only while some connection of that kind is open).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use hashbrown::HashMap;

use super::core::{Core, Effect, Input};
use super::shared::Shared;
use crate::metrics::add;
use crate::proxy::{Parsed, ProxyConn};
use crate::runtime::engine::{ConnId, Handler, Io};
use crate::storage::log::Log;
use crate::tls::{TlsConn, TlsSetup};
use crate::ws::{WsConfig, WsConn, WsError, WsRead};

/// What one engine listener puts between the socket and the MQTT bytes (the same on every
/// worker): nothing for a plain listener, TLS, WebSocket, or TLS then WebSocket; any of them
/// after a PROXY protocol header (`proxy`).
#[derive(Clone, Default)]
pub struct Layers {
    pub proxy: bool,
    pub tls: Option<Arc<TlsSetup>>,
    pub ws: Option<Arc<WsConfig>>,
}

struct Tls {
    id: ConnId,
    conn: Box<TlsConn>,
    /// The handshake or a record failed: the socket closes without close_notify.
    failed: bool,
}

/// A connection whose PROXY header is not complete yet.
struct Proxy {
    id: ConnId,
    header: ProxyConn,
    /// The engine collects peer addresses: the header's source replaces the socket's.
    collect: bool,
    /// The header was refused or the core closed the connection first: later bytes are
    /// dropped.
    failed: bool,
}

struct Ws {
    id: ConnId,
    conn: Box<WsConn>,
    /// The socket's peer, when the engine collects addresses: its `X-Forwarded-For` is
    /// believed only if it is a trusted proxy.
    peer: Option<SocketAddr>,
}

pub struct Worker {
    core: Core,
    shared: Arc<Shared>,
    /// Per engine listener index: its layers.
    listeners: Arc<Vec<Layers>>,
    proxy: HashMap<u32, Proxy>,
    tls: HashMap<u32, Tls>,
    ws: HashMap<u32, Ws>,
    /// Scratch for TLS: decrypted bytes of one read, and records to send.
    tls_plain: Vec<u8>,
    tls_out: Vec<u8>,
    /// Scratch for WebSocket: MQTT bytes of one read, and frames / HTTP answers to send.
    ws_plain: Vec<u8>,
    /// When the engine state is next logged (trace level).
    next_describe: Instant,
    ws_out: Vec<u8>,
    /// The storage thread's end (`--data-dir`), the records being handed over, and the
    /// last commit given to the core.
    log: Option<Log>,
    log_buf: Vec<u8>,
    committed: u64,
}

/// Queue `bytes` on `conn`, encrypted first if it is a TLS connection.
fn transmit(
    tls: &mut HashMap<u32, Tls>,
    tls_out: &mut Vec<u8>,
    io: &mut Io<'_>,
    conn: ConnId,
    bytes: &[u8],
) {
    match tls.get_mut(&conn.slot) {
        Some(t) if t.id == conn => {
            if t.failed {
                return;
            }
            tls_out.clear();
            if let Err(e) = t.conn.encrypt(bytes, tls_out) {
                // Only after close_notify: the connection is closing anyway.
                tracing::debug!(error = %e, "tls write after close");
                return;
            }
            io.send_past_limit(conn, tls_out);
        }
        _ => {
            io.send_past_limit(conn, bytes);
        }
    }
}

impl Worker {
    /// The shell around `core` (built, and with a data dir restored, by `broker::start`).
    pub fn new(
        core: Core,
        shared: Arc<Shared>,
        listeners: Arc<Vec<Layers>>,
        log: Option<Log>,
    ) -> Worker {
        Worker {
            core,
            shared,
            listeners,
            proxy: HashMap::new(),
            tls: HashMap::new(),
            ws: HashMap::new(),
            tls_plain: Vec::new(),
            tls_out: Vec::new(),
            ws_plain: Vec::new(),
            next_describe: Instant::now(),
            ws_out: Vec::new(),
            log,
            log_buf: Vec::new(),
            committed: 0,
        }
    }

    fn input(&mut self, io: &mut Io<'_>, input: Input<'_>) {
        let now = io.now();
        self.core.handle(input, now);
        self.flush_log();
        self.execute(io);
    }

    /// Hand the records of the last input to the storage thread.
    fn flush_log(&mut self) {
        if let Some(log) = &self.log {
            if let Some(batch) = self.core.take_log(&mut self.log_buf) {
                log.submit(&mut self.log_buf, batch);
            }
        }
    }

    /// Tell the core about commits that completed.
    fn check_commits(&mut self, io: &mut Io<'_>) {
        let Some(c) = self.log.as_ref().map(|l| l.committed()) else {
            return;
        };
        if c > self.committed {
            self.committed = c;
            self.input(io, Input::Committed(c));
        }
    }

    /// A snapshot when one is due (the log is handed over first: the snapshot covers it).
    fn maybe_snapshot(&mut self, now: Instant, force: bool) {
        if self.log.is_none() || !(force || self.core.snapshot_due(now)) {
            return;
        }
        self.flush_log();
        let snap = self.core.snapshot(now);
        if let Some(log) = &self.log {
            log.snapshot(snap);
        }
    }

    /// After the loop ended (clean stop): a last snapshot, then the storage thread ends.
    pub fn finish(&mut self) {
        self.maybe_snapshot(Instant::now(), true);
        if let Some(log) = &self.log {
            log.stop();
        }
    }

    /// Carry out every effect the core has queued, in order.
    fn execute(&mut self, io: &mut Io<'_>) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Send { conn, bytes } if self.tls.is_empty() && self.ws.is_empty() => {
                    io.send_past_limit(conn, bytes);
                }
                Effect::Send { conn, bytes } => {
                    let bytes = match self.ws.get(&conn.slot) {
                        Some(w) if w.id == conn => {
                            if !w.conn.is_open() {
                                // Refused or closed (the answer is sent): nothing more goes out.
                                continue;
                            }
                            self.ws_out.clear();
                            w.conn.encode(bytes, &mut self.ws_out);
                            &self.ws_out[..]
                        }
                        _ => bytes,
                    };
                    transmit(&mut self.tls, &mut self.tls_out, io, conn, bytes);
                }
                Effect::Close(conn) => {
                    if let Some(p) = self.proxy.get_mut(&conn.slot) {
                        if p.id == conn && !p.failed {
                            // The connect timeout (or a shutdown) before the header was
                            // complete.
                            p.failed = true;
                            add(
                                &self.shared.metrics[self.core.id() as usize].proxy_errors,
                                1,
                            );
                            tracing::debug!("no complete PROXY header in time: closing");
                        }
                    }
                    if let Some(w) = self.ws.get_mut(&conn.slot).filter(|w| w.id == conn) {
                        self.ws_out.clear();
                        w.conn.close(crate::ws::CLOSE_NORMAL, &mut self.ws_out);
                        if !self.ws_out.is_empty() {
                            transmit(&mut self.tls, &mut self.tls_out, io, conn, &self.ws_out);
                        }
                    }
                    if let Some(t) = self.tls.get_mut(&conn.slot) {
                        if t.id == conn && !t.failed && !t.conn.is_handshaking() {
                            self.tls_out.clear();
                            t.conn.close_notify(&mut self.tls_out);
                            io.send_past_limit(conn, &self.tls_out);
                        }
                    }
                    io.close(conn);
                }
                Effect::PauseRecv(conn) => io.pause_recv(conn),
                Effect::ResumeRecv(conn) => io.resume_recv(conn),
                Effect::Post { worker, mail } if worker == crate::cluster::CLUSTER => {
                    if let Some(hub) = &self.shared.cluster {
                        hub.post(mail);
                    }
                }
                Effect::Post { worker, mail } => self.shared.mailboxes[worker as usize].push(mail),
                Effect::Wake(w) if w == crate::cluster::CLUSTER => {
                    if let Some(hub) = &self.shared.cluster {
                        hub.wake();
                    }
                }
                Effect::Wake(w) => {
                    if let Some(remotes) = self.shared.remotes.get() {
                        io.wake(&remotes[w as usize]);
                    }
                }
            }
        }
        // Keep the scratch capacity, but not a huge one left by a burst.
        if self.tls_out.capacity() > 1 << 20 {
            self.tls_out = Vec::new();
        }
        if self.ws_out.capacity() > 1 << 20 {
            self.ws_out = Vec::new();
        }
    }

    /// Bytes from a TLS connection: decrypt, answer the handshake, give the plaintext to the
    /// core.
    fn on_tls_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]) {
        let metrics = self.shared.metrics[self.core.id() as usize].clone();
        let Some(t) = self
            .tls
            .get_mut(&conn.slot)
            .filter(|t| t.id == conn && !t.failed)
        else {
            return;
        };
        // `plain` stays out of `self` while the core reads it.
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        self.tls_out.clear();
        let was_handshaking = t.conn.is_handshaking();
        let res = t.conn.read(data, &mut plain, &mut self.tls_out);
        if !self.tls_out.is_empty() {
            // Handshake messages and alerts: never refused for the queue limit.
            io.send_past_limit(conn, &self.tls_out);
        }
        let mut identity: Option<ByteString> = None;
        let mut ok = true;
        match res {
            Err(e) => {
                ok = false;
                if t.conn.is_handshaking() {
                    add(&metrics.tls_handshake_failures, 1);
                    tracing::debug!(error = %e, "TLS handshake failed");
                } else {
                    add(&metrics.tls_errors, 1);
                    tracing::debug!(error = %e, "TLS error");
                }
            }
            Ok(()) if was_handshaking && !t.conn.is_handshaking() => {
                if t.conn.take_cert_identity(self.shared.cfg.tls_cert_username) {
                    add(&metrics.tls_handshakes, 1);
                    identity = t.conn.cert_username.clone();
                } else {
                    ok = false;
                    add(&metrics.tls_handshake_failures, 1);
                    tracing::warn!(mode = ?self.shared.cfg.tls_cert_username,
                        "client certificate has no name to use as the username: closing");
                }
            }
            Ok(()) => {}
        }
        if ok {
            if let Some(username) = identity {
                self.input(io, Input::CertIdentity { conn, username });
            }
            if !plain.is_empty() {
                if self.ws.contains_key(&conn.slot) {
                    self.on_ws_data(io, conn, &plain, true);
                } else {
                    self.input(io, Input::Bytes { conn, data: &plain });
                }
            }
        } else {
            // No close_notify after the alert; the core learns of the end at on_close.
            t.failed = true;
            io.close(conn);
        }
        if plain.capacity() > 1 << 20 {
            plain = Vec::new();
        }
        self.tls_plain = plain;
    }

    /// Bytes from a WebSocket connection (after TLS, if any): answer the upgrade, decode the
    /// frames, give the MQTT bytes to the core; on a refusal, a bad frame or the client's
    /// close, send the answer and close. `counted`: the read was already reported to the
    /// core as activity (by the TLS layer); otherwise it is now, with the MQTT bytes or, if
    /// the read carried none, with an empty input.
    fn on_ws_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8], counted: bool) {
        let metrics = self.shared.metrics[self.core.id() as usize].clone();
        let Some(w) = self.ws.get_mut(&conn.slot).filter(|w| w.id == conn) else {
            return;
        };
        // `plain` stays out of `self` while the core reads it.
        let mut plain = std::mem::take(&mut self.ws_plain);
        plain.clear();
        self.ws_out.clear();
        let was_handshaking = w.conn.is_handshaking();
        let res = w.conn.read(data, &mut plain, &mut self.ws_out);
        let mut forwarded = None;
        if was_handshaking && !w.conn.is_handshaking() && w.conn.subprotocol().is_some() {
            add(&metrics.ws_handshakes, 1);
            // Only where addresses are collected, and only from a proxy we trust.
            if let (Some(from), Some(peer)) = (w.conn.forwarded_for(), w.peer) {
                let trusted = &self.shared.cfg.ws_trusted_proxies;
                if trusted.iter().any(|n| n.contains(peer.ip())) {
                    forwarded = Some(SocketAddr::new(from, 0));
                } else {
                    tracing::debug!(%peer, "X-Forwarded-For from an untrusted peer ignored");
                }
            }
        }
        let end = match res {
            Ok(WsRead::Continue) => false,
            Ok(WsRead::Close) => true,
            Err(e) => {
                match e {
                    WsError::Handshake { .. } => add(&metrics.ws_handshake_failures, 1),
                    WsError::Protocol { .. } => add(&metrics.ws_errors, 1),
                }
                tracing::debug!(error = %e, "websocket");
                true
            }
        };
        if !self.ws_out.is_empty() {
            // The upgrade answer, pongs, close frames: never refused for the queue limit.
            transmit(&mut self.tls, &mut self.tls_out, io, conn, &self.ws_out);
        }
        if let Some(peer) = forwarded {
            self.input(io, Input::Peer { conn, peer });
        }
        if !plain.is_empty() {
            // Also before a close: a DISCONNECT right before it must suppress the will.
            self.input(io, Input::Bytes { conn, data: &plain });
        } else if !counted {
            // A ping, a partial frame or the upgrade request: still activity for keep-alive.
            self.input(io, Input::Bytes { conn, data: &[] });
        }
        if end {
            io.close(conn);
        }
        if plain.capacity() > 1 << 20 {
            plain = Vec::new();
        }
        self.ws_plain = plain;
    }

    /// Bytes from a connection whose PROXY header is being read: once it is complete, the
    /// source address becomes the peer and the rest goes to the next layer; a bad header
    /// closes the socket.
    fn on_proxy_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]) {
        let Some(p) = self.proxy.get_mut(&conn.slot).filter(|p| p.id == conn) else {
            return;
        };
        if p.failed {
            return;
        }
        match p.header.read(data) {
            Ok(Parsed::Need) => {}
            Ok(Parsed::Done { source, consumed }) => {
                let collect = p.collect;
                self.proxy.remove(&conn.slot);
                if let Some(src) = source {
                    tracing::debug!(source = %src, "PROXY header");
                    if collect {
                        self.input(io, Input::Peer { conn, peer: src });
                        // X-Forwarded-For is then believed if the header's source is trusted.
                        if let Some(w) = self.ws.get_mut(&conn.slot).filter(|w| w.id == conn) {
                            w.peer = Some(src);
                        }
                    }
                }
                let rest = &data[consumed..];
                if !rest.is_empty() {
                    self.on_layer_data(io, conn, rest);
                }
            }
            Err(e) => {
                p.failed = true;
                add(
                    &self.shared.metrics[self.core.id() as usize].proxy_errors,
                    1,
                );
                tracing::debug!(error = %e, "closing");
                io.close(conn);
            }
        }
    }

    /// Bytes for the TLS or WebSocket layer of `conn`, or for the core if it has none.
    fn on_layer_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]) {
        if self.tls.get(&conn.slot).is_some_and(|t| t.id == conn) {
            // Any bytes from the client reset keep-alive, even a TLS record that decrypts to
            // nothing yet.
            self.input(io, Input::Bytes { conn, data: &[] });
            self.on_tls_data(io, conn, data);
        } else if self.ws.get(&conn.slot).is_some_and(|w| w.id == conn) {
            // Likewise a WebSocket ping or a partial frame (reported by on_ws_data).
            self.on_ws_data(io, conn, data, false);
        } else {
            self.input(io, Input::Bytes { conn, data });
        }
    }

    /// Pop this worker's mailbox (bounded per call so one flooded mailbox cannot starve the
    /// sockets) into the core.
    fn drain_mailbox(&mut self, io: &mut Io<'_>) {
        let me = self.core.id() as usize;
        for _ in 0..65536 {
            let Some(mail) = self.shared.mailboxes[me].pop() else {
                break;
            };
            self.input(io, Input::Mail(mail));
        }
    }
}

impl Handler for Worker {
    fn on_open(&mut self, io: &mut Io<'_>, conn: ConnId, peer: Option<SocketAddr>) {
        let layers = io.listener(conn).and_then(|l| self.listeners.get(l));
        let tls = layers.and_then(|l| l.tls.clone());
        let ws = layers.and_then(|l| l.ws.clone());
        let proxy = layers.is_some_and(|l| l.proxy);
        self.input(io, Input::Opened { conn, peer });
        if proxy {
            self.proxy.insert(
                conn.slot,
                Proxy {
                    id: conn,
                    header: ProxyConn::new(),
                    collect: peer.is_some(),
                    failed: false,
                },
            );
        }
        if let Some(setup) = tls {
            match TlsConn::new(&setup) {
                Ok(t) => {
                    self.tls.insert(
                        conn.slot,
                        Tls {
                            id: conn,
                            conn: Box::new(t),
                            failed: false,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start TLS");
                    add(
                        &self.shared.metrics[self.core.id() as usize].tls_handshake_failures,
                        1,
                    );
                    io.close(conn);
                    return;
                }
            }
        }
        if let Some(config) = ws {
            self.ws.insert(
                conn.slot,
                Ws {
                    id: conn,
                    conn: Box::new(WsConn::new(&config)),
                    peer,
                },
            );
        }
    }

    fn on_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]) {
        if self.tls.is_empty() && self.ws.is_empty() && self.proxy.is_empty() {
            self.input(io, Input::Bytes { conn, data });
        } else if self.proxy.get(&conn.slot).is_some_and(|p| p.id == conn) {
            self.on_proxy_data(io, conn, data);
        } else {
            self.on_layer_data(io, conn, data);
        }
    }

    fn on_close(&mut self, io: &mut Io<'_>, conn: ConnId, error: Option<std::io::Error>) {
        if let Some(e) = &error {
            tracing::debug!(error = %e, "connection error");
        }
        if self.proxy.get(&conn.slot).is_some_and(|p| p.id == conn) {
            self.proxy.remove(&conn.slot);
        }
        if self.tls.get(&conn.slot).is_some_and(|t| t.id == conn) {
            self.tls.remove(&conn.slot);
        }
        if self.ws.get(&conn.slot).is_some_and(|w| w.id == conn) {
            self.ws.remove(&conn.slot);
        }
        self.input(io, Input::Closed { conn });
    }

    fn on_sent(&mut self, io: &mut Io<'_>, conn: ConnId, queued: usize) {
        self.input(io, Input::Sent { conn, queued });
    }

    fn on_wake(&mut self, io: &mut Io<'_>) {
        self.check_commits(io);
        self.drain_mailbox(io);
    }

    fn on_tick(&mut self, io: &mut Io<'_>, now: Instant) {
        self.check_commits(io);
        self.drain_mailbox(io);
        self.input(io, Input::Tick);
        self.maybe_snapshot(now, false);
        let st = io.stats();
        let m = &self.shared.metrics[self.core.id() as usize];
        m.recv_enobufs.store(st.recv_enobufs, Ordering::Relaxed);
        m.bytes_out.store(st.bytes_out, Ordering::Relaxed);
        m.connections_refused
            .store(st.refused_max_conns, Ordering::Relaxed);
        m.accept_errors.store(st.accept_errors, Ordering::Relaxed);
        m.io_rings.store(st.shards, Ordering::Relaxed);
        if tracing::enabled!(tracing::Level::TRACE) && now >= self.next_describe {
            self.next_describe = now + std::time::Duration::from_secs(5);
            tracing::trace!(worker = self.core.id(), "engine: {}", io.describe());
        }
    }

    fn should_stop(&self) -> bool {
        self.core.should_stop()
    }
}

/// Bytes of the fixed-size slots one live connection occupies in a worker (engine slot, core
/// client and session slots, slot index). Plain connections have no PROXY, TLS or WebSocket
/// entry.
pub fn slot_bytes_per_connection() -> usize {
    crate::runtime::engine::conn_state_size() + super::core::slot_bytes()
}
