//! State every worker can reach, and why each piece is shared rather than messaged:
//! - the ClientId [`OwnershipTable`] (connect path only),
//! - the retained store (behind a lock, touched only by retained publishes and subscribes),
//! - one lock-free mailbox per worker (the shell pops it and hands each [`Mail`] to its core),
//! - per-worker metrics (each worker is the only writer of its own counters),
//! - per-worker counts of subscription changes posted (each worker writes its own; read to
//!   tell whether a view of the other workers' filters is up to date, `router.rs`).
//!
//! Everything else (connections, sessions, the subscription trie of the sessions a worker
//! holds, its view of the shared-subscription groups, the timing wheel) belongs to one
//! worker's [`super::Core`] and is touched by no other thread.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};

use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use super::mail::{Mail, VerifyJob};
use crate::config::Config;
use crate::metrics::{Metrics, WorkerMetrics};
use crate::ownership::OwnershipTable;
use crate::routing::retained::RetainedStore;
use crate::runtime::engine::Remote;
use crate::session::config::ProtocolLimits;
use crate::session::Message;

/// State every worker can reach.
pub struct Shared {
    pub cfg: Config,
    /// Password file, ACL and failed-login limiter.
    pub auth: crate::auth::Auth,
    /// Queue to the password-verification threads (None: no password file).
    pub(crate) auth_jobs: Option<std::sync::mpsc::SyncSender<VerifyJob>>,
    /// The protocol limits from `cfg`; each core keeps its own copy.
    pub limits: ProtocolLimits,
    pub owners: OwnershipTable,
    pub mailboxes: Vec<SegQueue<Mail>>,
    /// Payload bytes of the messages waiting in each mailbox (see `worker_mailbox_limit`).
    pub mailbox_bytes: Vec<CachePadded<AtomicUsize>>,
    pub remotes: OnceLock<Vec<Remote>>,
    /// Subscriptions held by each worker (so a publisher skips workers with none).
    pub sub_counts: Vec<CachePadded<AtomicUsize>>,
    /// Per worker: how many changes of its subscriptions it has posted to the other workers'
    /// views (`Mail::Filter`, `Mail::Shared`), counted before it posts them. A worker whose
    /// view applied fewer knows it is behind (PUBACK 0x10, see `router.rs`). Written on the
    /// subscribe path only; the publish path reads it.
    pub filter_changes: Vec<CachePadded<AtomicU64>>,
    /// The hash every worker's view of the others' filters keys exact filters with
    /// (`routing::remote`).
    pub filter_hasher: hashbrown::DefaultHashBuilder,
    pub retained: Mutex<RetainedStore<Message>>,
    /// Version of the last change of `retained` (taken under its lock; logged with it).
    pub retain_version: AtomicU64,
    pub metrics: Metrics,
    pub shutdown: AtomicBool,
    pub next_assigned_id: AtomicU64,
    /// In a cluster: the way to the node's control thread (`crate::cluster`).
    pub cluster: Option<Arc<crate::cluster::hub::Hub>>,
}

impl Shared {
    /// The shared state of `n` workers (no threads started: `broker::start` and the
    /// simulation both build on it).
    pub fn new(
        cfg: Config,
        n: usize,
        auth: crate::auth::Auth,
        auth_jobs: Option<std::sync::mpsc::SyncSender<VerifyJob>>,
    ) -> Shared {
        // In a cluster the control thread has counters of its own, after the workers'.
        let slots = n + cfg.cluster.enabled() as usize;
        let metrics: Metrics = Arc::new(
            (0..slots)
                .map(|_| Arc::new(WorkerMetrics::default()))
                .collect(),
        );
        Shared {
            limits: limits_from(&cfg),
            owners: OwnershipTable::new(),
            mailboxes: (0..n).map(|_| SegQueue::new()).collect(),
            mailbox_bytes: (0..n)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            remotes: OnceLock::new(),
            sub_counts: (0..n)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            filter_changes: (0..n)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            filter_hasher: Default::default(),
            retained: Mutex::new(RetainedStore::new()),
            retain_version: AtomicU64::new(0),
            metrics,
            shutdown: AtomicBool::new(false),
            next_assigned_id: AtomicU64::new(1),
            cluster: cfg
                .cluster
                .enabled()
                .then(|| Arc::new(crate::cluster::hub::Hub::new())),
            auth,
            auth_jobs,
            cfg,
        }
    }

    pub fn workers(&self) -> usize {
        self.mailboxes.len()
    }

    /// Mail to worker `w` from a thread that is not a worker (password verification, the
    /// cluster control thread): counted against `worker_mailbox_limit` as `Core::post`
    /// counts it, pushed, and the worker woken.
    pub fn post_from_outside(&self, w: u16, mail: Mail) {
        self.push_from_outside(w, mail);
        self.wake_from_outside(w);
    }

    /// As [`Self::post_from_outside`] without the wake: for a thread that posts many and
    /// then wakes each worker it posted to once.
    pub fn push_from_outside(&self, w: u16, mail: Mail) {
        let w = w as usize;
        let bytes = mail.payload_bytes();
        if bytes > 0 {
            self.mailbox_bytes[w].fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        self.mailboxes[w].push(mail);
    }

    /// Wake worker `w` to read its mailbox.
    pub fn wake_from_outside(&self, w: u16) {
        if let Some(r) = self.remotes.get() {
            r[w as usize].wake();
        }
    }

    /// Apply a retained PUBLISH to the retained store (an empty payload deletes). Returns
    /// the change's version, taken under the store's lock so versions order the changes;
    /// `None` when nothing changed (a topic too deep to store).
    pub fn store_retained(&self, msg: &Message) -> Option<u64> {
        let mut store = self.retained.lock();
        if msg.payload.is_empty() {
            store.remove(&msg.topic);
        } else if store.set(&msg.topic, msg.clone()).is_err() {
            tracing::warn!(topic = %msg.topic, "retained topic too deep, not stored");
            return None;
        }
        Some(
            self.retain_version
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
        )
    }
}

fn limits_from(cfg: &Config) -> ProtocolLimits {
    ProtocolLimits {
        connect_timeout: cfg.connect_timeout(),
        max_keep_alive: cfg.max_keep_alive,
        server_keep_alive: cfg.server_keep_alive,
        keep_alive_when_zero: cfg.keep_alive_when_zero,
        v311_keep_alive_out_of_policy: cfg.v311_keep_alive_policy,
        receive_maximum: cfg.receive_maximum,
        max_packet_size: cfg.max_packet_size,
        topic_alias_maximum: cfg.topic_alias_maximum,
        max_outbound_topic_aliases: cfg.outbound_topic_aliases,
        retain_available: cfg.retain_available,
        wildcard_available: cfg.wildcard_subscriptions,
        shared_available: cfg.shared_subscriptions,
        sub_ids_available: cfg.subscription_identifiers,
        max_session_expiry: cfg.max_session_expiry,
        v311_persistent_session_expiry: cfg.v311_session_expiry,
        v31_strict_client_id: cfg.v31_strict_client_id,
        no_matching_subscribers_reason: cfg.no_matching_subscribers_reason,
        max_inflight_out: cfg.max_inflight,
        max_queued_messages: cfg.max_queued_messages,
        max_queued_bytes: cfg.max_queued_bytes,
        queue_qos0_offline: cfg.queue_qos0_offline,
        durable: cfg.data_dir.is_some(),
        ..ProtocolLimits::default()
    }
}
