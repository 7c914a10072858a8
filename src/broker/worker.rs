//! The io_uring shell of one worker: the engine's [`Handler`] that turns callbacks into
//! [`Input`]s for the worker's [`Core`] and carries out the [`Effect`]s it returns, in
//! [`Worker::execute`], the one place they are executed.
//!
//! TLS lives here, between the engine and the core: connections accepted on a TLS listener
//! get a `TlsConn`; their bytes are decrypted before `Input::Bytes` and every `Effect::Send` is
//! encrypted before it is queued. A handshake failure closes the socket at once (the core
//! learns of it as a lost connection). Plain connections pay nothing for it (the TLS states
//! are in a map keyed by slot, consulted only for TLS listeners).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use hashbrown::HashMap;

use super::core::{Core, Effect, Input};
use super::shared::Shared;
use crate::metrics::add;
use crate::runtime::engine::{ConnId, Handler, Io};
use crate::storage::log::Log;
use crate::tls::{TlsConn, TlsSetup};

struct Tls {
    id: ConnId,
    conn: Box<TlsConn>,
    /// The handshake or a record failed: the socket closes without close_notify.
    failed: bool,
}

pub struct Worker {
    core: Core,
    shared: Arc<Shared>,
    /// Per engine listener index: the TLS setup of a TLS listener, None for a plain one.
    listener_tls: Arc<Vec<Option<Arc<TlsSetup>>>>,
    tls: HashMap<u32, Tls>,
    /// Scratch for TLS: decrypted bytes of one read, and records to send.
    tls_plain: Vec<u8>,
    tls_out: Vec<u8>,
    /// The storage thread's end (`--data-dir`), the records being handed over, and the
    /// last commit given to the core.
    log: Option<Log>,
    log_buf: Vec<u8>,
    committed: u64,
}

impl Worker {
    /// The shell around `core` (built, and with a data dir restored, by `broker::start`).
    pub fn new(
        core: Core,
        shared: Arc<Shared>,
        listener_tls: Arc<Vec<Option<Arc<TlsSetup>>>>,
        log: Option<Log>,
    ) -> Worker {
        Worker {
            core,
            shared,
            listener_tls,
            tls: HashMap::new(),
            tls_plain: Vec::new(),
            tls_out: Vec::new(),
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
                Effect::Send { conn, bytes } if self.tls.is_empty() => {
                    io.send_past_limit(conn, bytes);
                }
                Effect::Send { conn, bytes } => match self.tls.get_mut(&conn.slot) {
                    Some(t) if t.id == conn => {
                        self.tls_out.clear();
                        if let Err(e) = t.conn.encrypt(bytes, &mut self.tls_out) {
                            // Only after close_notify: the connection is closing anyway.
                            tracing::debug!(error = %e, "tls write after close");
                            continue;
                        }
                        io.send_past_limit(conn, &self.tls_out);
                    }
                    _ => {
                        io.send_past_limit(conn, bytes);
                    }
                },
                Effect::Close(conn) => {
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
                Effect::Post { worker, mail } => self.shared.mailboxes[worker as usize].push(mail),
                Effect::Wake(w) => {
                    if let Some(remotes) = self.shared.remotes.get() {
                        io.wake(&remotes[w as usize]);
                    }
                }
            }
        }
        // Keep the TLS scratch capacity, but not a huge one left by a burst.
        if self.tls_out.capacity() > 1 << 20 {
            self.tls_out = Vec::new();
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
                self.input(io, Input::Bytes { conn, data: &plain });
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
        let setup = io
            .listener(conn)
            .and_then(|l| self.listener_tls.get(l))
            .and_then(|s| s.clone());
        self.input(io, Input::Opened { conn, peer });
        if let Some(setup) = setup {
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
                }
            }
        }
    }

    fn on_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]) {
        if !self.tls.is_empty() && self.tls.get(&conn.slot).is_some_and(|t| t.id == conn) {
            // Any bytes from the client reset keep-alive, even a TLS record that decrypts to
            // nothing yet.
            self.input(io, Input::Bytes { conn, data: &[] });
            self.on_tls_data(io, conn, data);
        } else {
            self.input(io, Input::Bytes { conn, data });
        }
    }

    fn on_close(&mut self, io: &mut Io<'_>, conn: ConnId, error: Option<std::io::Error>) {
        if let Some(e) = &error {
            tracing::debug!(error = %e, "connection error");
        }
        if self.tls.get(&conn.slot).is_some_and(|t| t.id == conn) {
            self.tls.remove(&conn.slot);
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
    }

    fn should_stop(&self) -> bool {
        self.core.should_stop()
    }
}

/// Bytes of the fixed-size slots one live connection occupies in a worker (engine slot, core
/// client and session slots, slot index). Plain connections have no TLS entry.
pub fn slot_bytes_per_connection() -> usize {
    crate::runtime::engine::conn_state_size() + super::core::slot_bytes()
}
