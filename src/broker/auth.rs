//! Authentication of CONNECT and the password-verification threads.
//!
//! A CONNECT with a user name, when a password file is loaded, is verified on one of
//! `auth_threads` verification threads (Argon2 takes tens of milliseconds: on a worker it would
//! stall every other connection of that worker). The job carries the worker id and the
//! connection id; the result comes back through the worker's ordinary mailbox
//! (`Mail::AuthResult`) with a wake, like a take-over hand-off. Meanwhile the connection's
//! state machine waits for the broker's answer as it does for a hand-off (packets the client
//! pipelines are buffered, the CONNECT timeout keeps running). A connection that closed
//! meanwhile is recognised by its generation and its result is dropped (the failed-login
//! count still applies).
//!
//! The queue to the verification threads is bounded (`VERIFY_QUEUE`): when it is full the
//! CONNECT is refused with 0x89 Server busy (3.1.1: 0x03) rather than queued without bound.

use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::core::{Core, Link};
use super::mail::{AuthResult, Mail, VerifyJob};
use super::shared::Shared;
use crate::auth::ClientAcl;
use crate::metrics::add;
use crate::protocol::ReasonCode;
use crate::session::ConnectRequest;

/// Verifications waiting for a thread, at most.
pub const VERIFY_QUEUE: usize = 1024;

/// Start the verification threads; they end when the broker's shared state is dropped.
pub(super) fn spawn_verifiers(
    n: usize,
    shared: Weak<Shared>,
    rx: Receiver<VerifyJob>,
) -> std::io::Result<()> {
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("ringmq-auth{i}"))
            .spawn(move || loop {
                let job = {
                    let Ok(guard) = rx.lock() else { return };
                    match guard.recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    }
                };
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                verify_one(&shared, job);
            })?;
    }
    Ok(())
}

fn verify_one(shared: &Shared, job: VerifyJob) {
    let VerifyJob {
        worker,
        conn,
        peer,
        mut req,
    } = job;
    let ok = match (&shared.auth.passwords(), &req.username, &req.password) {
        (Some(p), Some(u), Some(pw)) => p.verify(u, pw),
        _ => false,
    };
    req.password = None;
    let result = AuthResult {
        conn,
        peer,
        req,
        ok,
    };
    shared.post_from_outside(worker, Mail::AuthResult(Box::new(result)));
}

pub(super) fn verify_channel() -> (SyncSender<VerifyJob>, Receiver<VerifyJob>) {
    sync_channel(VERIFY_QUEUE)
}

impl Core {
    /// A validated CONNECT: authenticate, then go on with ownership and the session
    /// (`on_connect_request`).
    pub(super) fn on_connect_action(&mut self, idx: usize, mut req: ConnectRequest, now: Instant) {
        let shared = self.shared.clone();
        let auth = &shared.auth;
        let peer = self.clients[idx].peer().map(|a| a.ip());
        let Some(passwords) = auth.passwords() else {
            // No password file: user names are taken as given.
            req.password = None;
            if req.username.is_none() && !auth.allow_anonymous {
                return self.refuse_login(idx, ReasonCode::NOT_AUTHORIZED, now);
            }
            return self.authenticated(idx, req, now);
        };
        if let Some(ip) = peer {
            if auth.limiter.lock().is_blocked(ip, now) {
                add(&self.metrics.auth_rate_limited, 1);
                tracing::debug!(peer = %ip, "CONNECT refused: too many failed logins from this address");
                return self.refuse_login(idx, ReasonCode::CONNECTION_RATE_EXCEEDED, now);
            }
        }
        if req.username.is_none() {
            req.password = None;
            if !auth.allow_anonymous {
                tracing::info!(peer = ?peer, client_id = %req.client_id, "anonymous CONNECT refused");
                return self.refuse_login(idx, ReasonCode::NOT_AUTHORIZED, now);
            }
            return self.authenticated(idx, req, now);
        }
        if let Some(ip) = peer {
            if !auth.limiter.lock().try_begin(ip, now) {
                add(&self.metrics.auth_rate_limited, 1);
                return self.refuse_login(idx, ReasonCode::CONNECTION_RATE_EXCEEDED, now);
            }
        }
        if req.password.is_none() || passwords.is_empty() {
            // Nothing to verify: fails at once (still counted against the address).
            return self.login_failed(idx, peer, req, now);
        }
        let Some(tx) = &shared.auth_jobs else {
            return self.login_failed(idx, peer, req, now);
        };
        let job = VerifyJob {
            worker: self.id,
            conn: self.clients[idx].id,
            peer,
            req,
        };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if let Some(ip) = peer {
                    auth.limiter.lock().succeeded(ip, now);
                }
                tracing::warn!("password verification queue full: CONNECT refused (server busy)");
                self.refuse_login(idx, ReasonCode::SERVER_BUSY, now);
            }
        }
    }

    /// A verification thread answered.
    pub(super) fn on_auth_result(&mut self, r: Box<AuthResult>, now: Instant) {
        let AuthResult {
            conn,
            peer,
            req,
            ok,
        } = *r;
        let idx = self
            .client_index(conn)
            .filter(|&i| self.clients[i].link == Link::Open);
        if ok {
            if let Some(ip) = peer {
                self.shared.auth.limiter.lock().succeeded(ip, now);
            }
            if let Some(idx) = idx {
                tracing::debug!(peer = ?peer, user = ?req.username, client_id = %req.client_id, "login");
                self.authenticated(idx, req, now);
            }
            return;
        }
        match idx {
            Some(idx) => self.login_failed(idx, peer, req, now),
            None => {
                add(&self.metrics.auth_failures, 1);
                tracing::warn!(peer = ?peer, user = ?req.username, client_id = %req.client_id,
                    "login failed: bad user name or password (connection already gone)");
            }
        }
    }

    fn login_failed(
        &mut self,
        idx: usize,
        peer: Option<IpAddr>,
        req: ConnectRequest,
        now: Instant,
    ) {
        add(&self.metrics.auth_failures, 1);
        // Never the password.
        tracing::warn!(peer = ?peer, user = ?req.username, client_id = %req.client_id,
            "login failed: bad user name or password");
        self.refuse_login(idx, ReasonCode::BAD_USER_NAME_OR_PASSWORD, now);
    }

    fn refuse_login(&mut self, idx: usize, code: ReasonCode, now: Instant) {
        self.drive(idx, now, |c, out| c.refuse_connect(code, now, out));
    }

    /// The client is who it says (or anonymous and allowed): check its will against the ACL,
    /// bind the ACL to the connection, continue with the session.
    pub(super) fn authenticated(&mut self, idx: usize, mut req: ConnectRequest, now: Instant) {
        req.password = None;
        if let Some(acl) = self.acl.clone() {
            // The id the ACL sees (%c) is the one the client sent; an empty one is assigned
            // later and matches no %c pattern until then — assign it here instead.
            if req.client_id.is_empty() {
                req.client_id = self.assign_client_id(idx);
            }
            let cacl = ClientAcl {
                acl,
                username: req.username.clone(),
                client_id: (*req.client_id).clone(),
            };
            if let Some(w) = &req.will {
                if !cacl.can_publish(&w.topic) {
                    add(&self.metrics.acl_denied, 1);
                    tracing::info!(user = ?req.username, client_id = %req.client_id, topic = %w.topic,
                        "CONNECT refused: will topic not allowed by the ACL");
                    return self.refuse_login(idx, ReasonCode::NOT_AUTHORIZED, now);
                }
            }
            self.clients[idx].conn.set_acl(Some(cacl));
        }
        self.on_connect_request(idx, req, now);
    }

    /// May the session `key` receive a message on `topic` (ACL read)? Always true without an ACL.
    /// After `Auth::reload`: take the ACL now in force and rebind every connection to it
    /// (identities stay; only the rules change).
    pub(super) fn refresh_acl(&mut self) {
        self.auth_generation = self.shared.auth.generation();
        self.acl = self.shared.auth.acl();
        let Some(acl) = self.acl.clone() else {
            return;
        };
        for (_, c) in self.clients.iter_mut() {
            c.conn.replace_acl_rules(&acl);
        }
    }

    pub(super) fn may_read(&self, key: crate::ownership::SessionKey, topic: &str) -> bool {
        let Some(acl) = &self.acl else {
            return true;
        };
        let Some(e) = self.session(key) else {
            return true;
        };
        acl.check_topic(
            e.username().map(|u| &u[..]),
            &e.client_id,
            crate::auth::Access::Read,
            topic,
        )
    }
}
