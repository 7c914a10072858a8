//! The broker core of one worker, without I/O: it owns the worker's clients, sessions,
//! subscription view and timing wheel, takes [`Input`]s with the time, and returns
//! [`Effect`]s for its shell to carry out (quinn-proto's `Endpoint` shape).
//!
//! ```text
//! shell (runtime/engine.rs + broker/worker.rs)        Core (this file, takeover.rs, router.rs, auth.rs)
//!   on_open / on_data / on_close / on_sent     ->   handle(Input::{Opened, Bytes, Closed, Sent}, now)
//!   mailbox pop / wake / tick                  ->   handle(Input::{Mail, Tick}, now)
//!   io.send / close / pause / resume / wake    <-   poll_effect() -> Effect::{Send, Close,
//!   mailbox push                                      PauseRecv, ResumeRecv, Post, Wake}
//! ```
//!
//! # Contract
//! - The shell calls [`Core::handle`], then [`Core::poll_effect`] until it returns `None`, and
//!   executes each effect in order; effects are executed in that one place. `Send` bytes for
//!   one connection are in order; `Close` follows the last `Send` of its connection.
//! - Plaintext only: TLS (and any other listener layer) sits in the shell, between the engine
//!   and `Input::Bytes` / `Effect::Send`.
//! - The core never blocks and never reads a clock; `now` comes with every input. It reads
//!   the state shared between workers ([`Shared`]: ownership table, retained store, shared
//!   subscription groups, mailbox byte counters), which is memory, not I/O.
//! - `Input::Sent` reports how many bytes the transport still holds for a connection after a
//!   send completed: the core's only view of the socket queue (slow-consumer limits).
//!
//! # Inside: one queue of actions
//! A connection's state machine (`session::Connection`) answers each call with `Action`s.
//! Leading `Send` actions become `Effect::Send` at once (encoded into the core's output
//! buffer); from the first other action on, the actions are appended to one work queue that
//! [`Core::run_work`] drains in order. Nothing
//! drains it but `run_work`, and `run_work` is called only from `handle`, so no action handler
//! runs inside another: a PUBLISH routed to a thousand sessions queues their sends and nothing
//! else.
//!
//! # The end of a connection
//! Every end goes through two functions here: [`Core::close_client`] (the state machine asked
//! to close: DISCONNECT, keep-alive, protocol error, take-over, shutdown, slow consumer, lost
//! network) and [`Core::connection_ended`] (the socket is gone: the session is kept offline or
//! ends, the will is published or waits, both as `session::will` decided).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use slab::Slab;

use super::mail::{Claimant, Mail};
use super::shared::Shared;
use crate::metrics::{add, sub, WorkerMetrics};
use crate::ownership::SessionKey;
use crate::protocol::{self, Packet, ProtocolVersion, ReasonCode};
use crate::routing::remote::RemoteFilters;
use crate::routing::shared::SharedSubscriptions;
use crate::routing::trie::SubscriptionTrie;
use crate::runtime::engine::ConnId;
use crate::runtime::wheel::TimerWheel;
use crate::session::config::ProtocolLimits;
use crate::session::{
    keepalive, will, Action, ClientId, Connection, Message, PendingWill, Subscription,
};

/// Something that happened to this worker.
pub enum Input<'a> {
    /// The transport accepted a connection (`peer`: only when addresses are collected).
    Opened {
        conn: ConnId,
        peer: Option<SocketAddr>,
    },
    /// Bytes from the client (plaintext), any amount: a packet may span inputs.
    Bytes { conn: ConnId, data: &'a [u8] },
    /// The transport verified a client certificate that names the MQTT user
    /// (`tls_cert_username`): its CONNECT's User Name is replaced, no password asked.
    CertIdentity { conn: ConnId, username: ByteString },
    /// The transport learned the client's address from a proxy it trusts (WebSocket
    /// `X-Forwarded-For`): it replaces the socket's peer.
    Peer { conn: ConnId, peer: SocketAddr },
    /// The connection is gone: our close completed, the peer left, or an I/O error. Once per
    /// opened connection.
    Closed { conn: ConnId },
    /// A send completed; the transport still holds `queued` bytes for `conn`.
    Sent { conn: ConnId, queued: usize },
    /// Mail from another worker or a verification thread.
    Mail(Mail),
    /// The storage thread has every log batch up to this one on disk (`take_log`).
    Committed(u64),
    /// Time passed: timers, shutdown request, ACL reload, paused publishers, `$SYS`.
    Tick,
}

/// A session that continues from another node of a cluster, with a will travelling with it
/// (`takeover.rs`).
pub(super) type RemoteSession = (Box<crate::session::Session>, Option<(Message, Instant)>);

/// Something the shell must do, in order.
#[derive(Debug)]
pub enum Effect<'a> {
    /// Queue these bytes on the connection (never refused for the queue limit: the core
    /// applies the limits itself).
    Send {
        conn: ConnId,
        bytes: &'a [u8],
    },
    /// Flush what is queued, then close; `Input::Closed` follows.
    Close(ConnId),
    /// Stop reading from the connection until `ResumeRecv` (back-pressure).
    PauseRecv(ConnId),
    ResumeRecv(ConnId),
    /// Put mail into another worker's mailbox.
    Post {
        worker: u16,
        mail: Mail,
    },
    /// Wake that worker (after the posts before it).
    Wake(u16),
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mail::Publish(m) => write!(f, "Publish({:?})", m.payload),
            Mail::Deliver { session, msg, .. } => {
                write!(f, "Deliver({session:?}, {:?})", msg.payload)
            }
            Mail::TakeOver(t) => write!(f, "TakeOver({:?} for {:?})", t.target, t.claimant),
            Mail::Handoff(h) => write!(
                f,
                "Handoff(for {:?}, session {}, from {:?})",
                h.claimant,
                h.session.is_some(),
                h.from
            ),
            Mail::Forward {
                session,
                msg,
                routed,
                ..
            } => write!(
                f,
                "Forward({session:?}, {:?}, routed {routed})",
                msg.payload
            ),
            Mail::Unforward { target, to } => write!(f, "Unforward({target:?} to {to:?})"),
            Mail::ForwardDone { session } => write!(f, "ForwardDone({session:?})"),
            Mail::AuthResult(_) => f.write_str("AuthResult"),
            Mail::Shared { ack, .. } => write!(f, "Shared(ack {ack:?})"),
            Mail::SharedApplied { token } => write!(f, "SharedApplied({token})"),
            Mail::Filter { from, filter, add } => write!(f, "Filter({from}, {filter}, {add})"),
            Mail::PublishAcked { msg, ack, fanout } => {
                write!(f, "PublishAcked({:?}, {ack:?}, {fanout:?})", msg.payload)
            }
            Mail::FanoutRouted { token, seq } => write!(f, "FanoutRouted({token}, {seq})"),
            Mail::Stored { client_id, epoch } => write!(f, "Stored({client_id}, {epoch})"),
            Mail::Cluster(_) => f.write_str("Cluster"),
            Mail::ClusterClaimed(_) => f.write_str("ClusterClaimed"),
            Mail::NodeFilter { node, filter, add } => {
                write!(f, "NodeFilter({node}, {filter}, {add})")
            }
            Mail::ServeShared { group, msg } => {
                write!(f, "ServeShared({group}, {:?})", msg.payload)
            }
            Mail::Fence => f.write_str("Fence"),
            Mail::DropStale { client_id, epoch } => write!(f, "DropStale({client_id}, {epoch})"),
        }
    }
}

/// Effects as queued: a `Send` is a span of the output stream (offsets from the start of
/// the stream; `out` holds it from `out_base` on).
pub(super) enum Fx {
    Send {
        conn: ConnId,
        start: usize,
        end: usize,
    },
    Close(ConnId),
    PauseRecv(ConnId),
    ResumeRecv(ConnId),
    Post {
        worker: u16,
        mail: Mail,
        /// Waits for the commit of what this input logged (`post_after_commit`); any other
        /// mail goes at once, so mail between workers keeps the order of the decisions.
        after_commit: bool,
    },
    Wake(u16),
    /// Everything after this waits until log batch `.0` is committed (`persist.rs`).
    Barrier(u64),
}

/// What a timer of the wheel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    Conn(ConnId),
    Session(SessionKey),
}

/// A [`Timer`] as the wheel stores it: 8 bytes (a wheel entry is then 16, and every
/// connection has one). The top bit of the slot says which kind; slots and session indexes
/// stay below 2^30 (`Config::check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimerKey {
    index: u32,
    generation: u32,
}

const SESSION_TIMER: u32 = 1 << 31;

impl TimerKey {
    fn conn(id: ConnId) -> TimerKey {
        TimerKey {
            index: id.slot & !SESSION_TIMER,
            generation: id.generation,
        }
    }
    fn session(key: SessionKey) -> TimerKey {
        TimerKey {
            index: key.index | SESSION_TIMER,
            generation: key.generation,
        }
    }
    fn timer(self) -> Timer {
        if self.index & SESSION_TIMER == 0 {
            Timer::Conn(ConnId {
                slot: self.index,
                generation: self.generation,
            })
        } else {
            Timer::Session(SessionKey {
                index: self.index & !SESSION_TIMER,
                generation: self.generation,
            })
        }
    }
}

/// The tick of the worker's timing wheel.
const WHEEL_TICK: Duration = Duration::from_millis(50);

/// Where a client's socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    Open,
    /// We asked the shell to close it; `Input::Closed` follows.
    Closing,
    /// The transport reported it closed (only while its end is processed).
    Gone,
}

/// What few connections have, boxed so the idle majority pays one pointer.
#[derive(Default)]
pub(super) struct ClientExtra {
    /// The id the broker assigned (empty CONNECT client id).
    pub assigned_id: Option<ClientId>,
    /// The will the state machine decided on when it asked to close (only while closing).
    pub close_will: Option<PendingWill>,
    /// The peer's address, only when the transport collects them (`peer_addrs`: a password
    /// file with a failed-login limit).
    pub peer: Option<SocketAddr>,
    /// The user a verified client certificate names (`tls_cert_username`).
    pub cert_username: Option<ByteString>,
    /// Output held back from the SUBACK of a shared subscription on until every worker's view
    /// has the new member (see `router.rs`).
    pub hold: Option<Hold>,
    /// QoS 0 messages the socket cannot take yet (`overflow.rs`).
    pub qos0: Option<Box<Qos0Queue>>,
}

/// A connected client's QoS 0 messages waiting for its socket, oldest first (`overflow.rs`).
#[derive(Default)]
pub(super) struct Qos0Queue {
    pub items: VecDeque<(Message, crate::session::Delivery)>,
    /// Topic and payload bytes of `items`.
    pub bytes: usize,
}

/// The rate limit of the drop warning (`overflow.rs`).
#[derive(Default)]
pub(super) struct DropLog {
    pub last: Option<Instant>,
    /// Drops since the last warning that it did not name.
    pub unlogged: u64,
}

/// A client's output held until `waiting` workers have applied the change `token`.
pub(super) struct Hold {
    pub token: u64,
    pub waiting: usize,
    pub bytes: Vec<u8>,
    /// Acknowledgements wait for other workers' commits (`persist.rs`): never released
    /// early; reading from the client pauses instead while the hold is over its bound.
    pub durable: bool,
    pub paused: bool,
    /// Inbound QoS 2 ids whose PUBREC is among the held bytes: logged at release.
    pub in2: Vec<u16>,
    /// Packet ids of fan-outs among them: logged at once, in the batch of their `FANOUT`
    /// (`persist.rs`).
    pub fanout_ids: Vec<u16>,
    /// The log batch of the input that opened a durable hold: its local copies must be on
    /// disk too before the held acknowledgements go.
    pub batch: u64,
}

// --- durability: the state behind `persist.rs` ---------------------------------------

/// Drop records written this long before a snapshot are repeated in it (see `recover.rs`).
pub(super) const KEEP_DROPS: Duration = Duration::from_secs(60);

pub(super) struct Persist {
    pub mode: crate::storage::Durability,
    /// Records since the shell last took them.
    pub log: Vec<u8>,
    /// The batch those records belong to.
    pub batch: u64,
    /// The highest batch on disk.
    pub committed: u64,
    pub barrier_open: bool,
    /// Images of sessions handed to another owner that has not confirmed it stored them.
    pub unconfirmed: hashbrown::HashMap<u64, (ByteString, Vec<u8>)>,
    pub recent_drops: VecDeque<(Instant, ByteString, u64)>,
    pub last_snapshot: Instant,
    pub snapshot_interval: Duration,
    /// Log bytes since the last snapshot (a snapshot also bounds the log's size).
    pub since_snapshot: u64,
    pub scratch: Vec<u8>,
    /// QoS 2 fan-outs this worker started whose `FANOUT_DONE` is not on disk yet, by
    /// sequence number (`persist.rs`).
    pub fanouts: std::collections::BTreeMap<u64, Fanning>,
    pub next_fanout: u64,
    /// Other workers' fan-outs routed here, per origin: the origin's last watermark (every
    /// fan-out below it is done on disk there) and the sequence numbers at or above it.
    pub routed: hashbrown::HashMap<u16, (u64, std::collections::BTreeSet<(u64, u32)>)>,
}

/// A fan-out in progress (`persist.rs`).
pub(super) struct Fanning {
    pub rec: crate::storage::record::Fanout,
    /// Workers that have not answered yet.
    pub waiting: usize,
    /// The batch its `FANOUT_DONE` went into, once every worker answered.
    pub done_batch: Option<u64>,
}

/// Log bytes after which a snapshot is taken whatever the interval.
pub(super) const SNAPSHOT_LOG_BYTES: u64 = 256 << 20;

impl Persist {
    pub fn new(
        mode: crate::storage::Durability,
        snapshot_interval: Duration,
        now: Instant,
    ) -> Persist {
        Persist {
            mode,
            log: Vec::new(),
            batch: 1,
            committed: 0,
            barrier_open: false,
            unconfirmed: hashbrown::HashMap::new(),
            recent_drops: VecDeque::new(),
            last_snapshot: now,
            snapshot_interval,
            since_snapshot: 0,
            scratch: Vec::new(),
            fanouts: Default::default(),
            // Sequence numbers of one start never meet those of another (recovery settles
            // every fan-out of the files it reads; this is only a second line).
            next_fanout: crate::storage::clock::wall_ms(now).saturating_mul(1_000_000),
            routed: hashbrown::HashMap::new(),
        }
    }

    /// Records go to the log (`sync` and `batched`; `none` only snapshots).
    pub fn logs(&self) -> bool {
        self.mode != crate::storage::Durability::None
    }
}

/// A live network connection on this worker.
pub(super) struct Client {
    pub id: ConnId,
    pub conn: Connection,
    /// Unfinished tail of a packet (only while one is split across reads; boxed: 8 bytes
    /// inline for the idle majority).
    pub rx: Option<Box<BytesMut>>,
    /// The session slot once CONNECT has been claimed.
    pub session: Option<SessionKey>,
    /// The wheel holds a key for us (`armed`), due at wheel tick `scheduled` (two fields, not
    /// an `Option`: the flag fits beside `link`).
    pub armed: bool,
    pub scheduled: Scheduled,
    pub link: Link,
    /// Bytes the transport holds for this connection, as of the last `Sent` plus what was
    /// sent since.
    pub queued: u32,
    pub extra: Option<Box<ClientExtra>>,
}

impl Client {
    pub fn extra(&mut self) -> &mut ClientExtra {
        self.extra.get_or_insert_with(Box::default)
    }
    pub fn peer(&self) -> Option<SocketAddr> {
        self.extra.as_ref().and_then(|e| e.peer)
    }
    pub fn assigned_id(&self) -> Option<ClientId> {
        self.extra.as_ref().and_then(|e| e.assigned_id.clone())
    }
}

pub(super) enum SessionState {
    /// Claimed by a CONNECT on this worker that waits for the hand-off from the previous owner.
    Pending {
        conn: Option<ConnId>,
    },
    Online {
        conn: ConnId,
    },
    /// Kept after its connection ended, with when it expires and a will waiting for its delay.
    Offline(Box<OfflineSession>),
    /// Handed off to another slot; still indexed here or still receiving forwards from an
    /// earlier owner, so deliveries are relayed (see `takeover.rs`, "Cut-over").
    Moved(Box<Moved>),
}

/// A session that moved to `to` and is still indexed here (`filters`) or still receives
/// forwards from an earlier owner (`upstream`): deliveries are relayed to `to`.
pub(super) struct Moved {
    pub to: Claimant,
    pub filters: Vec<ByteString>,
    /// An earlier owner that still forwards to this slot, with the cut-over state of what
    /// this slot's own index matched meanwhile (relayed after the earlier owner is done).
    pub upstream: Option<Box<Cutover>>,
    /// We have told `upstream` to stop forwarding.
    pub upstream_told: bool,
    /// `to` indexed the session: drop the filters here once `upstream` is done.
    pub unforwarded: bool,
}

/// The new owner's side of a cut-over: messages its own index matched for the session wait
/// until the previous owner's forwards are done, so order is kept and duplicates dropped.
pub(super) struct Cutover {
    /// The previous owner (worker, slot) that forwards to us.
    pub from: (u16, SessionKey),
    /// Messages forwarded by the index of the previous owner (already delivered or relayed).
    pub forwarded: Vec<Message>,
    /// Messages this slot's index matched meanwhile.
    pub held: Vec<(Message, crate::session::Delivery)>,
}

impl Cutover {
    /// A cut-over from `from`; `delivered`: messages an earlier cut-over of the same session
    /// already delivered (they count as forwarded).
    pub fn resuming(from: (u16, SessionKey), delivered: Vec<Message>) -> Cutover {
        Cutover {
            from,
            forwarded: delivered,
            held: Vec::new(),
        }
    }
}

/// A session kept after its connection ended.
pub(super) struct OfflineSession {
    pub session: crate::session::Session,
    /// When it expires (None: never).
    pub expires_at: Option<Instant>,
    /// Will waiting for its delay, and when it is due.
    pub delayed_will: Option<(Message, Instant)>,
}

/// A session slot (48 bytes). The session's data lives in the `Connection` while online.
pub(super) struct SessionEntry {
    /// Shared with the session and the ownership table.
    pub client_id: ClientId,
    /// Ownership epoch under which this worker holds the ClientId.
    pub epoch: u64,
    pub generation: u32,
    /// The CONNECT that created this entry asked for a clean start.
    pub clean_start: bool,
    pub state: SessionState,
    /// What few slots have, boxed so the idle majority pays one pointer.
    extra: Option<Box<EntryExtra>>,
}

#[derive(Default)]
struct EntryExtra {
    /// The user of the CONNECT that created this entry.
    username: Option<ByteString>,
    /// A newer claimant took this pending entry over: pass the hand-off on to it.
    forward: Option<Box<super::mail::TakeOver>>,
    /// Set while the previous owner of this (just moved) session still forwards to it.
    cutover: Option<Box<Cutover>>,
}

impl EntryExtra {
    fn is_empty(&self) -> bool {
        self.username.is_none() && self.forward.is_none() && self.cutover.is_none()
    }
}

impl SessionEntry {
    fn extra_mut(&mut self) -> &mut EntryExtra {
        self.extra.get_or_insert_with(Box::default)
    }
    /// Give the box back once nothing is left in it.
    fn tidy(&mut self) {
        if self.extra.as_ref().is_some_and(|x| x.is_empty()) {
            self.extra = None;
        }
    }
    pub fn username(&self) -> Option<&ByteString> {
        self.extra.as_ref().and_then(|x| x.username.as_ref())
    }
    pub fn set_username(&mut self, username: Option<ByteString>) {
        match username {
            Some(u) => self.extra_mut().username = Some(u),
            None => {
                if let Some(x) = self.extra.as_mut() {
                    x.username = None;
                }
                self.tidy();
            }
        }
    }
    pub fn has_forward(&self) -> bool {
        self.extra.as_ref().is_some_and(|x| x.forward.is_some())
    }
    pub fn set_forward(&mut self, t: super::mail::TakeOver) {
        self.extra_mut().forward = Some(Box::new(t));
    }
    pub fn take_forward(&mut self) -> Option<Box<super::mail::TakeOver>> {
        let t = self.extra.as_mut()?.forward.take();
        self.tidy();
        t
    }
    /// An offline slot's session, with the slot's client id, epoch and user (for the log).
    pub fn offline_parts(
        &mut self,
    ) -> Option<(
        &mut crate::session::Session,
        &ClientId,
        u64,
        Option<&ByteString>,
    )> {
        let SessionState::Offline(off) = &mut self.state else {
            return None;
        };
        let user = self.extra.as_ref().and_then(|x| x.username.as_ref());
        Some((&mut off.session, &self.client_id, self.epoch, user))
    }
    pub fn cutover_mut(&mut self) -> Option<&mut Cutover> {
        self.extra.as_mut()?.cutover.as_deref_mut()
    }
    pub fn set_cutover(&mut self, c: Option<Box<Cutover>>) {
        match c {
            Some(c) => self.extra_mut().cutover = Some(c),
            None => {
                self.take_cutover();
            }
        }
    }
    pub fn take_cutover(&mut self) -> Option<Box<Cutover>> {
        let c = self.extra.as_mut()?.cutover.take();
        self.tidy();
        c
    }
}

const NO_CLIENT: u32 = u32::MAX;

/// One worker's broker state. See the module header.
pub struct Core {
    pub(super) id: u16,
    pub(super) shared: Arc<Shared>,
    /// This worker's copy of the protocol limits (each connection holds a reference).
    pub(super) limits: Arc<ProtocolLimits>,
    pub(super) metrics: Arc<WorkerMetrics>,
    pub(super) clients: Slab<Client>,
    /// Transport slot -> index into `clients` (NO_CLIENT when free). Slots are dense (freed
    /// slots are reused), so a vector indexed by slot is bounded by the peak number of
    /// connections and costs no hashing on every input.
    by_slot: Vec<u32>,
    pub(super) sessions: Slab<SessionEntry>,
    next_generation: u32,
    pub(super) subs: SubscriptionTrie<SessionKey, Subscription>,
    pub(super) wheel: TimerWheel<TimerKey>,
    /// The work queue: (client index, action), drained only by `run_work`.
    pub(super) work: VecDeque<(usize, Action)>,
    /// Scratch for one connection call's actions.
    scratch: Vec<Action>,
    /// Scratch list of (session, options, subscription id) matches for `route_local`.
    pub(super) route_hits: Vec<(SessionKey, protocol::SubscriptionOptions, Option<u32>)>,
    /// Scratch lists of `route_publish` for shared subscriptions.
    pub(super) shared_groups: Vec<crate::routing::GroupId>,
    pub(super) shared_picks: Vec<((u16, SessionKey), Subscription)>,
    /// This worker's view of every shared-subscription group, whatever worker the members are
    /// on, kept in step by `Mail::Shared` (no lock on the publish path).
    pub(super) shared_view: SharedSubscriptions<(u16, SessionKey), Subscription>,
    /// This worker's view of the filters the other workers' sessions subscribe to (PUBACK
    /// 0x10), kept in step by `Mail::Filter`.
    pub(super) remote_filters: RemoteFilters,
    /// In a cluster: the filters the other nodes' sessions subscribe to, one count per filter
    /// (`broker/cluster.rs`).
    pub(super) node_filters: RemoteFilters,
    /// Sessions from another node waiting for the local take-over of a stale copy here
    /// (`takeover.rs`), by the claimant's slot.
    pub(super) cluster_remote: hashbrown::HashMap<SessionKey, RemoteSession>,
    /// Mail for the cluster control thread posted since the last wake.
    wake_cluster: bool,
    /// While restoring a data dir: the filters added, for the other workers' views (instead
    /// of one `Mail::Filter` each).
    pub(super) restored_filters: Option<crate::routing::remote::RestoredFilters>,
    /// Clients whose output is held, by hold token.
    pub(super) holds: hashbrown::HashMap<u64, ConnId>,
    pub(super) next_token: u64,
    /// Set by `post` when a QoS 1/2 message went to a mailbox over `worker_mailbox_limit`:
    /// the publisher being read is then paused.
    pub(super) mailbox_full: bool,
    /// The ACL in force as of `auth_generation` (see `refresh_acl`).
    pub(super) acl: Option<Arc<crate::auth::Acl>>,
    pub(super) auth_generation: u64,
    /// Connections whose reading is paused until the other workers' mailboxes drain.
    paused: Vec<ConnId>,
    /// Messages and bytes in the clients' QoS 0 queues (`overflow.rs`).
    pub(super) qos0_messages: usize,
    pub(super) qos0_bytes: usize,
    pub(super) drop_log: DropLog,
    expired: Vec<TimerKey>,
    /// Mail this worker posted to itself, handled before `handle` returns.
    local_mail: VecDeque<Mail>,
    /// Workers whose mailbox we posted to since the last wake.
    to_wake: Vec<bool>,
    pub(super) effects: VecDeque<Fx>,
    /// Bytes of the queued `Send` effects, from stream offset `out_base` on.
    out: BytesMut,
    out_base: usize,
    /// The client whose PUBLISH is being routed (`route_publish` holds its acknowledgement
    /// for other workers' commits in durability `sync`).
    pub(super) publisher: Option<usize>,
    /// Effects waiting for log batch `.0` to be committed, in order (`persist.rs`), the
    /// connections they are for (count), and how many are mail or wakes.
    held: VecDeque<(u64, Fx)>,
    held_conns: hashbrown::HashMap<ConnId, usize>,
    held_posts: usize,
    /// The batch of the last barrier `poll_effect` passed (effects after it wait for it).
    gate: u64,
    /// A held post was just released: its wake follows.
    wake_after_held: Option<u16>,
    /// Durability (`--data-dir`): the log and the commit barrier.
    pub(super) persist: Option<Persist>,
    shutting_down: bool,
    started: Instant,
    pub(super) last_sys: Instant,
}

impl Core {
    pub fn new(id: u16, shared: Arc<Shared>, now: Instant) -> Core {
        let n = shared.workers();
        let conns = shared.cfg.max_connections_per_worker as usize;
        // The generation first: a reload in between makes this worker refresh once more.
        let auth_generation = shared.auth.generation();
        let acl = shared.auth.acl();
        Core {
            id,
            limits: Arc::new(shared.limits.clone()),
            metrics: shared.metrics[id as usize].clone(),
            // Reserved up front (virtual memory only: untouched pages cost no RSS), so growth
            // never reallocates them and leaves freed copies behind.
            clients: Slab::with_capacity(conns),
            by_slot: Vec::with_capacity(conns),
            sessions: Slab::with_capacity(conns),
            next_generation: 1,
            subs: SubscriptionTrie::new(),
            // Starts with `started` (`wheel_tick`).
            wheel: TimerWheel::new(now, WHEEL_TICK, 4096),
            work: VecDeque::new(),
            scratch: Vec::new(),
            route_hits: Vec::new(),
            shared_groups: Vec::new(),
            shared_picks: Vec::new(),
            shared_view: SharedSubscriptions::new(),
            remote_filters: RemoteFilters::new(n, shared.filter_hasher),
            node_filters: RemoteFilters::new(1, shared.filter_hasher),
            wake_cluster: false,
            cluster_remote: hashbrown::HashMap::new(),
            restored_filters: None,
            holds: hashbrown::HashMap::new(),
            next_token: 1,
            mailbox_full: false,
            acl,
            auth_generation,
            paused: Vec::new(),
            qos0_messages: 0,
            qos0_bytes: 0,
            drop_log: Default::default(),
            expired: Vec::new(),
            local_mail: VecDeque::new(),
            to_wake: vec![false; n],
            effects: VecDeque::new(),
            out: BytesMut::with_capacity(4096),
            out_base: 0,
            publisher: None,
            held: VecDeque::new(),
            held_conns: hashbrown::HashMap::new(),
            held_posts: 0,
            gate: 0,
            wake_after_held: None,
            persist: None,
            shutting_down: false,
            started: now,
            last_sys: now,
            shared,
        }
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    /// True once a shutdown has closed every connection: the shell may stop.
    pub fn should_stop(&self) -> bool {
        self.shutting_down && self.clients.is_empty()
    }

    /// Connections, session slots, timers in the wheel, and shared-subscription members in
    /// this worker's view.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.clients.len(),
            self.sessions.len(),
            self.wheel.len(),
            self.shared_view.len(),
        )
    }

    /// Client ids whose session is online here on a connection that is not closing (the
    /// simulation checks that each has at most one across all workers).
    #[doc(hidden)]
    pub fn live_owners(&self) -> Vec<ByteString> {
        self.sessions
            .iter()
            .filter_map(|(_, e)| match e.state {
                SessionState::Online { conn } => self
                    .client_index(conn)
                    .filter(|&i| self.clients[i].link == Link::Open)
                    .map(|_| (*e.client_id).clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the core still reads from this connection (it has not decided to close it;
    /// the `Close` effect may wait for a commit). The simulation needs it to know whether a
    /// client's DISCONNECT arriving now is read.
    #[doc(hidden)]
    pub fn reads_from(&self, conn: ConnId) -> bool {
        self.client_index(conn)
            .is_some_and(|i| self.clients[i].link == Link::Open)
    }

    /// Whether this connection holds its session (its CONNECT was accepted; the CONNACK may
    /// still wait for a commit).
    #[doc(hidden)]
    pub fn holds_session(&self, conn: ConnId) -> bool {
        let Some(i) = self.client_index(conn) else {
            return false;
        };
        let Some(key) = self.clients[i].session else {
            return false;
        };
        self.session(key)
            .is_some_and(|e| matches!(e.state, SessionState::Online { conn: c } if c == conn))
    }

    /// Slots that moved and relay to another slot: (slot, to worker, to slot).
    #[doc(hidden)]
    pub fn relays(&self) -> Vec<(SessionKey, u16, SessionKey)> {
        self.sessions
            .iter()
            .filter_map(|(i, e)| match &e.state {
                SessionState::Moved(m) => Some((
                    SessionKey {
                        index: i as u32,
                        generation: e.generation,
                    },
                    m.to.worker,
                    m.to.session,
                )),
                _ => None,
            })
            .collect()
    }

    /// The invariants between this core's tables; panics with the broken one.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        assert!(self.work.is_empty(), "work left after handle");
        assert!(self.local_mail.is_empty(), "local mail left after handle");
        for (i, c) in self.clients.iter() {
            assert_eq!(self.by_slot[c.id.slot as usize], i as u32, "slot index");
            if let Some(key) = c.session {
                if let Some(e) = self.session(key) {
                    match e.state {
                        SessionState::Online { conn }
                        | SessionState::Pending { conn: Some(conn) } => {
                            assert_eq!(conn, c.id, "client and session disagree")
                        }
                        _ => {}
                    }
                }
            }
        }
        self.check_qos0_totals();
        for (_, e) in self.sessions.iter() {
            if let SessionState::Online { conn } = e.state {
                let i = self
                    .client_index(conn)
                    .expect("online session without its client");
                assert_eq!(
                    self.clients[i].session.map(|k| k.generation),
                    Some(e.generation),
                    "online session not held by its client"
                );
            }
        }
    }

    /// The next effect for the shell, in order. `None` when none is left; effects that wait
    /// for a log commit (`persist.rs`) stay behind until `Input::Committed` releases them.
    pub fn poll_effect(&mut self) -> Option<Effect<'_>> {
        if let Some(w) = self.wake_after_held.take() {
            return Some(Effect::Wake(w));
        }
        let fx = loop {
            if self
                .held
                .front()
                .is_some_and(|(b, _)| *b <= self.committed())
            {
                let (_, fx) = self.held.pop_front().expect("front exists");
                self.unhold(&fx);
                if let Fx::Post { worker, .. } = fx {
                    // Its wake went long ago.
                    self.wake_after_held = Some(worker);
                }
                break fx;
            }
            match self.effects.pop_front() {
                None => {
                    self.gate = 0;
                    if self.held.is_empty() {
                        // Everything was executed: the output buffer starts over (keeping
                        // its capacity, but not a huge one left by a burst).
                        self.out_base += self.out.len();
                        if self.out.capacity() > 1 << 20 {
                            self.out = BytesMut::with_capacity(4096);
                        } else {
                            self.out.clear();
                        }
                    } else {
                        self.compact_out();
                    }
                    return None;
                }
                Some(Fx::Barrier(b)) => self.gate = b,
                // Only acknowledgements wait; wakes and mail that announces nothing go.
                Some(
                    fx @ (Fx::Wake(_)
                    | Fx::Post {
                        after_commit: false,
                        ..
                    }),
                ) => break fx,
                Some(fx) => {
                    let committed = self.committed();
                    let wait = if self.gate > committed {
                        Some(self.gate)
                    } else if self.follows_held(&fx) {
                        self.held.back().map(|(b, _)| *b)
                    } else {
                        None
                    };
                    match wait {
                        Some(b) => {
                            self.note_held(&fx);
                            self.held.push_back((b, fx));
                        }
                        None => break fx,
                    }
                }
            }
        };
        Some(match fx {
            Fx::Send { conn, start, end } => Effect::Send {
                conn,
                bytes: &self.out[start - self.out_base..end - self.out_base],
            },
            Fx::Close(c) => Effect::Close(c),
            Fx::PauseRecv(c) => Effect::PauseRecv(c),
            Fx::ResumeRecv(c) => Effect::ResumeRecv(c),
            Fx::Post { worker, mail, .. } => Effect::Post { worker, mail },
            Fx::Wake(w) => Effect::Wake(w),
            Fx::Barrier(_) => unreachable!("barriers are never held"),
        })
    }

    /// The connection an effect is for (its order with that connection's other effects).
    fn fx_conn(fx: &Fx) -> Option<ConnId> {
        match fx {
            Fx::Send { conn, .. }
            | Fx::Close(conn)
            | Fx::PauseRecv(conn)
            | Fx::ResumeRecv(conn) => Some(*conn),
            _ => None,
        }
    }

    /// An effect that must stay behind a held one: same connection, or mail (mail between
    /// two workers keeps its order).
    fn follows_held(&self, fx: &Fx) -> bool {
        if self.held.is_empty() {
            return false;
        }
        match Self::fx_conn(fx) {
            Some(c) => self.held_conns.get(&c).is_some_and(|&n| n > 0),
            None => self.held_posts > 0,
        }
    }

    fn note_held(&mut self, fx: &Fx) {
        match Self::fx_conn(fx) {
            Some(c) => *self.held_conns.entry(c).or_default() += 1,
            None => self.held_posts += 1,
        }
    }

    fn unhold(&mut self, fx: &Fx) {
        match Self::fx_conn(fx) {
            Some(c) => {
                if let Some(n) = self.held_conns.get_mut(&c) {
                    *n -= 1;
                    if *n == 0 {
                        self.held_conns.remove(&c);
                    }
                }
            }
            None => self.held_posts -= 1,
        }
    }

    /// Forget the output of `conn` that waits for a commit (`sends_only`: keep its pause,
    /// resume and close). For a connection that is gone, or whose session was taken over:
    /// what waits there was decided for a session that lives on elsewhere now (its new
    /// connection resends what is not acknowledged), and sending it after the take-over
    /// would show the client a message again without DUP.
    pub(super) fn drop_held(&mut self, conn: ConnId, sends_only: bool) {
        if !self.held_conns.contains_key(&conn) {
            return;
        }
        let mut left = 0;
        self.held.retain(|(_, fx)| {
            if Self::fx_conn(fx) != Some(conn) {
                return true;
            }
            let keep = sends_only && !matches!(fx, Fx::Send { .. });
            left += keep as usize;
            keep
        });
        if left == 0 {
            self.held_conns.remove(&conn);
        } else {
            self.held_conns.insert(conn, left);
        }
    }

    /// While effects wait for a commit, drop the output bytes already executed (the stream
    /// keeps its offsets), so a long wait does not keep every byte sent before it.
    fn compact_out(&mut self) {
        let first = self
            .held
            .iter()
            .map(|(_, f)| f)
            .chain(self.effects.iter())
            .find_map(|f| match f {
                Fx::Send { start, .. } => Some(*start),
                _ => None,
            })
            .unwrap_or(self.out_base + self.out.len());
        let done = first - self.out_base;
        if done > 64 * 1024 && done * 2 > self.out.len() {
            bytes::Buf::advance(&mut self.out, done);
            self.out_base += done;
        }
    }

    /// Take one input. Effects wait in `poll_effect`.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) {
        // A reload of the ACL applies before anything that follows it: checked on every input
        // (one atomic load), so mail posted after another worker saw the reload never meets
        // the old rules here.
        if self.shared.auth.generation() != self.auth_generation {
            self.refresh_acl();
        }
        match input {
            Input::Opened { conn, peer } => self.on_opened(conn, peer, now),
            Input::Bytes { conn, data } => self.on_bytes(conn, data, now),
            Input::CertIdentity { conn, username } => {
                if let Some(idx) = self.client_index(conn) {
                    self.clients[idx].extra().cert_username = Some(username);
                }
            }
            Input::Peer { conn, peer } => {
                if let Some(idx) = self.client_index(conn) {
                    self.clients[idx].extra().peer = Some(peer);
                }
            }
            Input::Closed { conn } => self.on_closed(conn, now),
            Input::Sent { conn, queued } => self.on_sent(conn, queued, now),
            Input::Mail(mail) => self.on_mail(mail, now),
            Input::Tick => self.on_tick(now),
            Input::Committed(batch) => self.on_committed(batch),
        }
        self.run_pending(now);
        self.release_idle_holds();
        self.flush_wakes();
    }

    /// The work queue, then mail this worker posted to itself, until both are empty.
    pub(super) fn run_pending(&mut self, now: Instant) {
        self.run_work(now);
        while let Some(mail) = self.local_mail.pop_front() {
            self.on_mail(mail, now);
            self.run_work(now);
        }
    }

    // --- tables -------------------------------------------------------------------------

    pub(super) fn client_index(&self, id: ConnId) -> Option<usize> {
        let idx = *self.by_slot.get(id.slot as usize)?;
        if idx == NO_CLIENT {
            return None;
        }
        let idx = idx as usize;
        (self.clients[idx].id == id).then_some(idx)
    }

    pub(super) fn session(&self, key: SessionKey) -> Option<&SessionEntry> {
        self.sessions
            .get(key.index as usize)
            .filter(|e| e.generation == key.generation)
    }

    pub(super) fn session_mut(&mut self, key: SessionKey) -> Option<&mut SessionEntry> {
        self.sessions
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation)
    }

    pub(super) fn new_session_entry(
        &mut self,
        client_id: ClientId,
        epoch: u64,
        state: SessionState,
        clean_start: bool,
    ) -> SessionKey {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let index = self.sessions.insert(SessionEntry {
            client_id,
            generation,
            epoch,
            state,
            clean_start,
            extra: None,
        }) as u32;
        add(&self.metrics.sessions_current, 1);
        SessionKey { index, generation }
    }

    /// Remove a session slot whose session has ended (subscriptions already removed).
    pub(super) fn drop_session_entry(&mut self, key: SessionKey) -> Option<SessionEntry> {
        self.session(key)?;
        sub(&self.metrics.sessions_current, 1);
        Some(self.sessions.remove(key.index as usize))
    }

    // --- effects ------------------------------------------------------------------------

    /// Queue mail for a worker; the wake is sent once per `handle`. When the target's mailbox
    /// already holds `worker_mailbox_limit` payload bytes (a worker that falls behind a flood
    /// must not buffer it without bound):
    /// - a QoS 0 message is dropped, counted in `mailbox_drops` (QoS 0 may be dropped on
    ///   congestion anywhere on its way, as at the socket);
    /// - a QoS 1/2 message is posted (it must not be lost), and the publisher being read is
    ///   paused (`mailbox_full`) until the mailboxes drain: the mailbox passes its limit by at
    ///   most what was already read from that publisher.
    pub(super) fn post(&mut self, worker: u16, mail: Mail) {
        if worker == crate::cluster::CLUSTER {
            self.effects.push_back(Fx::Post {
                worker,
                mail,
                after_commit: false,
            });
            self.wake_cluster = true;
            return;
        }
        if worker == self.id {
            self.local_mail.push_back(mail);
            return;
        }
        let w = worker as usize;
        if let Some(m) = mail.counted_message() {
            let bytes = m.queued_size();
            let waiting = self.shared.mailbox_bytes[w].load(Ordering::Relaxed);
            if waiting + bytes > self.shared.cfg.worker_mailbox_limit {
                if m.qos == protocol::QoS::AtMostOnce {
                    add(&self.metrics.mailbox_drops, 1);
                    return;
                }
                self.mailbox_full = true;
            }
            self.shared.mailbox_bytes[w].fetch_add(bytes, Ordering::Relaxed);
        }
        self.effects.push_back(Fx::Post {
            worker,
            mail,
            after_commit: false,
        });
        self.to_wake[w] = true;
    }

    /// Mail that announces something this input logged (a stored session, a committed
    /// copy): it leaves once that is on disk (`persist.rs`). To this worker itself it is
    /// handled in this input (its records follow in the same batch).
    pub(super) fn post_after_commit(&mut self, worker: u16, mail: Mail) {
        if worker == self.id || self.persist.is_none() {
            return self.post(worker, mail);
        }
        self.effects.push_back(Fx::Post {
            worker,
            mail,
            after_commit: true,
        });
        if worker == crate::cluster::CLUSTER {
            self.wake_cluster = true;
        } else {
            self.to_wake[worker as usize] = true;
        }
    }

    fn flush_wakes(&mut self) {
        if std::mem::take(&mut self.wake_cluster) {
            self.effects.push_back(Fx::Wake(crate::cluster::CLUSTER));
        }
        for w in 0..self.to_wake.len() {
            if std::mem::take(&mut self.to_wake[w]) {
                self.effects.push_back(Fx::Wake(w as u16));
            }
        }
    }

    /// Encode one packet into the output and queue it for the client. False (nothing queued)
    /// when it is not a PUBLISH and the transport's queue is over twice `send_queue_limit`:
    /// the caller closes the connection as a slow consumer.
    ///
    /// A PUBLISH was admitted already: QoS 0 by `deliver_to`'s soft limit (checked before
    /// every message, so at most one message passes it), QoS 1/2 by the in-flight window, and
    /// queued ones by the session queue bounds; refusing it here would close a client that
    /// merely had a backlog. Other packets (acks, PINGRESP) answer the client's own requests:
    /// they may use a second `send_queue_limit` of headroom, but a client that keeps asking
    /// and never reads hits twice the limit and is closed.
    fn send_packet(&mut self, idx: usize, packet: &Packet) -> bool {
        let headroom = self.shared.cfg.send_queue_limit.saturating_mul(2);
        let client = &mut self.clients[idx];
        if client.link != Link::Open {
            return true;
        }
        // A PUBREC makes the broker the owner of a QoS 2 message: its id is logged when the
        // PUBREC leaves (after the hold of copies on other workers, if any), so a restart
        // never routes it twice and never keeps an id whose copies are not on disk.
        if let Packet::PubRec(r) = packet {
            if self.persist.is_some()
                && client.conn.session().is_some_and(|s| {
                    s.is_durable() && s.extra().inbound_qos2.contains(&r.packet_id)
                })
            {
                match client.extra.as_mut().and_then(|e| e.hold.as_mut()) {
                    Some(h) if !h.fanout_ids.contains(&r.packet_id) => h.in2.push(r.packet_id),
                    _ => self.persist_in2(idx, &[r.packet_id]),
                }
            }
        }
        let client = &mut self.clients[idx];
        let version = client.conn.version().unwrap_or(ProtocolVersion::V311);
        let start = self.out.len();
        protocol::encode_packet(packet, version, &mut self.out);
        let end = self.out.len();
        let len = end - start;
        let is_publish = matches!(packet, Packet::Publish(_));
        if !is_publish && client.queued as usize + len > headroom {
            self.out.truncate(start);
            return false;
        }
        client.queued = client.queued.saturating_add(len as u32);
        add(&self.metrics.packets_out, 1);
        if is_publish {
            add(&self.metrics.publish_out, 1);
        }
        if let Some(hold) = client.extra.as_mut().and_then(|e| e.hold.as_mut()) {
            hold.bytes.extend_from_slice(&self.out[start..end]);
            self.out.truncate(start);
            // Bounded: a hold lasts one mail round trip; if the other workers are so slow
            // that it fills a send queue, the output goes out without waiting for them
            // (shared subscriptions), or the client is not read until it went (durability).
            if hold.bytes.len() > self.shared.cfg.send_queue_limit {
                if hold.durable {
                    if !hold.paused {
                        hold.paused = true;
                        let conn = client.id;
                        self.effects.push_back(Fx::PauseRecv(conn));
                    }
                } else {
                    add(&self.metrics.shared_holds_expired, 1);
                    self.release_hold(idx);
                }
            }
            return true;
        }
        let conn = client.id;
        self.queue_send(conn, start, end);
        true
    }

    /// Queue `out[start..end]` for `conn`; consecutive sends to one connection are one span.
    fn queue_send(&mut self, conn: ConnId, start: usize, end: usize) {
        let (start, end) = (start + self.out_base, end + self.out_base);
        if let Some(Fx::Send {
            conn: c, end: e, ..
        }) = self.effects.back_mut()
        {
            if *c == conn && *e == start {
                *e = end;
                return;
            }
        }
        self.effects.push_back(Fx::Send { conn, start, end });
    }

    /// Send what a client's hold kept back, and end the hold.
    pub(super) fn release_hold(&mut self, idx: usize) {
        let c = &mut self.clients[idx];
        let Some(hold) = c.extra.as_mut().and_then(|e| e.hold.take()) else {
            return;
        };
        self.holds.remove(&hold.token);
        if c.link != Link::Open {
            return;
        }
        let conn = c.id;
        if hold.paused && !self.paused.contains(&conn) {
            self.effects.push_back(Fx::ResumeRecv(conn));
        }
        if hold.durable && hold.batch > self.committed() {
            // Released in a later input: still after the commit of the input that held it.
            self.effects.push_back(Fx::Barrier(hold.batch));
        }
        if !hold.in2.is_empty() {
            self.persist_in2(idx, &hold.in2);
        }
        if hold.bytes.is_empty() {
            return;
        }
        let start = self.out.len();
        self.out.extend_from_slice(&hold.bytes);
        let end = self.out.len();
        self.queue_send(conn, start, end);
    }

    // --- actions ------------------------------------------------------------------------

    /// Call the state machine of client `idx`. Its leading `Send`s go out now (a delivery is
    /// only sends); from its first other action on, its actions join the work queue in order,
    /// so a connection's packets and decisions keep the order its state machine gave them.
    pub(super) fn drive(
        &mut self,
        idx: usize,
        now: Instant,
        f: impl FnOnce(&mut Connection, &mut Vec<Action>),
    ) {
        let mut actions = std::mem::take(&mut self.scratch);
        f(&mut self.clients[idx].conn, &mut actions);
        self.dispatch(idx, now, &mut actions);
        self.scratch = actions;
    }

    /// Leading sends now, the rest into the work queue (see `drive`); empties `actions`.
    fn dispatch(&mut self, idx: usize, now: Instant, actions: &mut Vec<Action>) {
        // What the call changed in a durable session is logged before anything it sends.
        self.collect_client(idx);
        let suback = self.shared_suback(actions);
        let mut deferring = false;
        for (i, a) in actions.drain(..).enumerate() {
            if Some(i) == suback {
                self.open_hold(idx);
            }
            match a {
                Action::Send(p) if !deferring => self.send_or_close(idx, &p, now),
                other => {
                    deferring = true;
                    self.work.push_back((idx, other));
                }
            }
        }
    }

    /// With more than one worker: the position of the SUBACK (the send right before the
    /// first `Subscribe`) of a SUBSCRIBE that adds a shared subscription.
    fn shared_suback(&self, actions: &[Action]) -> Option<usize> {
        if self.shared.workers() < 2 {
            return None;
        }
        let first = actions.iter().position(|a| {
            matches!(a, Action::Subscribe { filter, .. }
                if crate::protocol::topic::parse_shared(filter).is_some())
        })?;
        actions[..first]
            .iter()
            .rposition(|a| matches!(a, Action::Send(Packet::SubAck(_))))
    }

    /// Hold the client's output from here on until the other workers' views have its new
    /// shared subscriptions (`Mail::SharedApplied`).
    fn open_hold(&mut self, idx: usize) {
        let token = self.next_token;
        self.next_token += 1;
        let c = &mut self.clients[idx];
        if c.extra.as_ref().is_some_and(|e| e.hold.is_some()) {
            return;
        }
        let conn = c.id;
        c.extra().hold = Some(Hold {
            token,
            waiting: 0,
            bytes: Vec::new(),
            durable: false,
            paused: false,
            in2: Vec::new(),
            fanout_ids: Vec::new(),
            batch: 0,
        });
        self.holds.insert(token, conn);
    }

    /// Hold client `idx`'s output from here on until `n` more `SharedApplied` answers for
    /// the returned token arrive (durability: other workers committed a message it
    /// published). Joins a hold already open.
    pub(super) fn hold_for(&mut self, idx: usize, n: usize) -> u64 {
        let c = &mut self.clients[idx];
        // The batch this input's records so far belong to, or the last one handed over.
        let open_batch =
            self.persist
                .as_ref()
                .map_or(0, |p| if p.barrier_open { p.batch } else { p.batch - 1 });
        if let Some(h) = c.extra.as_mut().and_then(|e| e.hold.as_mut()) {
            h.waiting += n;
            h.durable = true;
            h.batch = h.batch.max(open_batch);
            return h.token;
        }
        let token = self.next_token;
        self.next_token += 1;
        let conn = c.id;
        let batch = open_batch;
        c.extra().hold = Some(Hold {
            token,
            waiting: n,
            bytes: Vec::new(),
            durable: true,
            paused: false,
            in2: Vec::new(),
            fanout_ids: Vec::new(),
            batch,
        });
        self.holds.insert(token, conn);
        token
    }

    /// Holds no worker is waiting for any more (their changes went out, or none could).
    fn release_idle_holds(&mut self) {
        if self.holds.is_empty() {
            return;
        }
        let idle: Vec<ConnId> = self.holds.values().copied().collect();
        for conn in idle {
            if let Some(idx) = self.client_index(conn) {
                let waiting = self.clients[idx]
                    .extra
                    .as_ref()
                    .and_then(|e| e.hold.as_ref())
                    .map_or(0, |h| h.waiting);
                if waiting == 0 {
                    self.release_hold(idx);
                }
            }
        }
    }

    /// Send a packet; a client over its queue limit is closed as a slow consumer.
    fn send_or_close(&mut self, idx: usize, packet: &Packet, now: Instant) {
        if self.send_packet(idx, packet) {
            return;
        }
        add(&self.metrics.slow_consumer_disconnects, 1);
        tracing::warn!(peer = ?self.clients[idx].peer(),
            "send queue over its limit: closing slow consumer");
        let mut lost = Vec::new();
        self.clients[idx].conn.connection_lost(now, &mut lost);
        self.collect_client(idx);
        self.work.extend(lost.into_iter().map(|a| (idx, a)));
    }

    /// Carry out the queued actions, in order, until none is left. The only loop that runs
    /// action handlers; called only from `handle` and the packet loop.
    pub(super) fn run_work(&mut self, now: Instant) {
        while let Some((idx, action)) = self.work.pop_front() {
            // A client that is gone (or closing) takes no more actions, except the close
            // itself, which its own state machine emits once.
            let Some(client) = self.clients.get(idx) else {
                continue;
            };
            if client.link != Link::Open && !matches!(action, Action::Close { .. }) {
                continue;
            }
            match action {
                Action::Send(p) => self.send_or_close(idx, &p, now),
                Action::Connect(mut req) => {
                    // tls_cert_username: the verified client certificate names the user and is
                    // its authentication (no password check, as Mosquitto's
                    // use_identity_as_username).
                    let cert = self.clients[idx]
                        .extra
                        .as_ref()
                        .and_then(|e| e.cert_username.clone());
                    match cert {
                        Some(u) => {
                            req.username = Some(u);
                            req.password = None;
                            self.authenticated(idx, req, now)
                        }
                        None => self.on_connect_action(idx, req, now),
                    }
                }
                Action::Publish(msg) => {
                    add(&self.metrics.publish_in, 1);
                    self.publisher = Some(idx);
                    self.route_client_publish(idx, msg, now);
                    self.publisher = None;
                }
                Action::Subscribe {
                    filter,
                    options,
                    subscription_id,
                    existed,
                } => self.on_subscribe(idx, filter, options, subscription_id, existed, now),
                Action::Unsubscribe { filter } => self.on_unsubscribe(idx, &filter),
                Action::Close { will, reason } => {
                    if reason.is_some_and(|r| {
                        r.is_error()
                            && r != ReasonCode::KEEP_ALIVE_TIMEOUT
                            && r != ReasonCode::SESSION_TAKEN_OVER
                            && r != ReasonCode::SERVER_SHUTTING_DOWN
                            && !is_auth_refusal(r)
                    }) {
                        add(&self.metrics.protocol_errors, 1);
                    }
                    self.close_client(idx, will, now);
                }
            }
            self.reschedule(idx);
        }
    }

    // --- the end of a connection ----------------------------------------------------------

    /// The state machine asked to close (it does once, whatever the cause). The socket is
    /// closed after what was sent; the will waits for `connection_ended` with the session,
    /// except when the connection holds no session any more (taken over: the session already
    /// moved on), in which case it is published now.
    pub(super) fn close_client(&mut self, idx: usize, will: Option<PendingWill>, now: Instant) {
        let c = &mut self.clients[idx];
        if c.session.is_none() {
            if let Some(w) = will {
                self.publish_will(w.message, now);
            }
        } else if let Some(w) = will {
            c.extra().close_will = Some(w);
        }
        // What a hold kept back goes out before the close.
        self.release_hold(idx);
        let c = &mut self.clients[idx];
        if c.link == Link::Open {
            c.link = Link::Closing;
            let id = c.id;
            self.effects.push_back(Fx::Close(id));
        }
    }

    /// The socket is gone (every cause comes here once). A close we did not ask for (peer
    /// gone, I/O error) is abnormal: the state machine decides the will. Then the session is
    /// kept offline or ends, and the will is published, delayed or dropped.
    fn on_closed(&mut self, conn: ConnId, now: Instant) {
        let Some(idx) = self.client_index(conn) else {
            return;
        };
        sub(&self.metrics.connections_current, 1);
        if self.clients[idx].link == Link::Open {
            self.clients[idx].link = Link::Gone;
            self.drive(idx, now, |c, out| c.connection_lost(now, out));
            self.run_work(now);
        }
        self.by_slot[conn.slot as usize] = NO_CLIENT;
        // Output waiting for a commit has nowhere to go now.
        self.drop_held(conn, false);
        let qos0 = self.take_qos0(idx);
        let client = self.clients.remove(idx);
        if let Some(h) = client.extra.as_ref().and_then(|e| e.hold.as_ref()) {
            self.holds.remove(&h.token);
        }
        self.connection_ended(client, qos0, now);
    }

    /// The end of a network connection with a session: keep the session or end it, and
    /// publish or schedule the will the state machine decided (`session::will`).
    /// `qos0`: what was left in its QoS 0 queue.
    fn connection_ended(&mut self, mut client: Client, qos0: Option<Box<Qos0Queue>>, now: Instant) {
        let will = client.extra.as_mut().and_then(|e| e.close_will.take());
        let Some(key) = client.session else {
            if let Some(w) = will {
                self.publish_will(w.message, now);
            }
            self.end_qos0(qos0, None, None, now);
            return;
        };
        let Some(entry) = self.session_mut(key) else {
            self.end_qos0(qos0, None, None, now);
            return;
        };
        match entry.state {
            SessionState::Online { conn } if conn == client.id => {}
            SessionState::Pending { conn: Some(c) } if c == client.id => {
                // Never got CONNACK: no will (nor QoS 0 queue); the hand-off decides what
                // happens to the session.
                entry.state = SessionState::Pending { conn: None };
                self.end_qos0(qos0, None, None, now);
                return;
            }
            _ => {
                self.end_qos0(qos0, None, None, now);
                return;
            }
        }
        let client_id = entry.client_id.clone();
        let epoch = entry.epoch;
        let mut session = client.conn.take_session();
        let kept = session.as_mut().filter(|s| s.session_expiry() > 0);
        self.end_qos0(qos0, kept, Some(&client_id), now);
        let mut delayed = None;
        if let Some(w) = will {
            if w.delay.is_zero() {
                self.publish_will(w.message, now);
            } else {
                delayed = Some((w.message, now + w.delay));
            }
        }
        match session {
            Some(s) if s.session_expiry() > 0 && !self.fenced() => {
                self.store_offline(key, s, delayed, now)
            }
            other => {
                if let Some(s) = &other {
                    self.unindex_session(key, s);
                    if s.is_durable() {
                        self.persist_drop(&client_id, epoch, now);
                    }
                }
                if let Some((m, _)) = delayed {
                    debug_assert_eq!(will::on_session_end(), will::WillDecision::PublishNow);
                    self.publish_will(m, now);
                }
                self.drop_session_entry(key);
                self.release_ownership(&client_id, key, epoch);
            }
        }
    }

    /// Keep a session after its connection ended; schedule its expiry and a delayed will.
    pub(super) fn store_offline(
        &mut self,
        key: SessionKey,
        session: crate::session::Session,
        delayed_will: Option<(Message, Instant)>,
        now: Instant,
    ) {
        let expires_at = keepalive::session_deadline(now, session.session_expiry());
        self.keep_offline(key, session, expires_at, delayed_will, true);
    }

    /// Hold `session` offline in slot `key` until `expires_at`, with a will due later;
    /// `log`: write the change (not when it comes from the log itself, at restore).
    pub(super) fn keep_offline(
        &mut self,
        key: SessionKey,
        session: crate::session::Session,
        expires_at: Option<Instant>,
        delayed_will: Option<(Message, Instant)>,
        log: bool,
    ) {
        let will_due = delayed_will.as_ref().map(|w| w.1);
        self.mark_shared_offline(key, &session, true);
        let Some(e) = self.session_mut(key) else {
            return;
        };
        e.state = SessionState::Offline(Box::new(OfflineSession {
            session,
            expires_at,
            delayed_will,
        }));
        if let Some(t) = expires_at {
            self.wheel.insert(TimerKey::session(key), t);
        }
        if let Some(t) = will_due {
            self.wheel.insert(TimerKey::session(key), t);
        }
        if log {
            // A session that came whole (hand-off) writes its image first.
            self.collect_offline(key);
            self.persist_offline(key, expires_at, will_due);
        }
    }

    pub(super) fn publish_will(&mut self, will: Message, now: Instant) {
        add(&self.metrics.wills_published, 1);
        self.route_publish(will, now);
    }

    pub(super) fn release_ownership(&mut self, client_id: &str, key: SessionKey, epoch: u64) {
        self.release_in_cluster(client_id, epoch);
        self.shared.owners.release(
            client_id,
            crate::ownership::Owner {
                worker: self.id,
                session: key,
                epoch,
            },
        );
    }

    // --- inputs -------------------------------------------------------------------------

    fn on_opened(&mut self, conn: ConnId, peer: Option<SocketAddr>, now: Instant) {
        add(&self.metrics.connections_total, 1);
        add(&self.metrics.connections_current, 1);
        let idx = self.clients.insert(Client {
            id: conn,
            conn: Connection::new(self.limits.clone(), now),
            rx: None,
            session: None,
            armed: false,
            scheduled: Scheduled(0),
            link: Link::Open,
            queued: 0,
            extra: peer.map(|p| {
                Box::new(ClientExtra {
                    peer: Some(p),
                    ..Default::default()
                })
            }),
        });
        let slot = conn.slot as usize;
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, NO_CLIENT);
        }
        assert_eq!(
            self.by_slot[slot], NO_CLIENT,
            "transport reused a live slot"
        );
        self.by_slot[slot] = idx as u32;
        if self.shutting_down {
            self.close_client(idx, None, now);
            return;
        }
        self.reschedule(idx);
    }

    fn on_bytes(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let Some(idx) = self.client_index(conn) else {
            return;
        };
        add(&self.metrics.bytes_in, data.len() as u64);
        // Any bytes from the client reset keep-alive, even part of a packet (or a TLS record
        // that decrypts to nothing yet: an empty input).
        self.clients[idx].conn.on_bytes_received(now);
        if data.is_empty() {
            return;
        }
        self.mailbox_full = false;
        self.process_packets(idx, data, now);
        if std::mem::take(&mut self.mailbox_full)
            && self.clients.get(idx).is_some_and(|c| c.link == Link::Open)
        {
            self.pause_for_mailbox(idx);
        }
    }

    /// Decode and handle every complete packet buffered for a client.
    fn process_packets(&mut self, idx: usize, data: &[u8], now: Instant) {
        let max = self.shared.cfg.max_packet_size;
        // Fast path: nothing buffered, decode straight from the transport's buffer.
        let mut buf: BytesMut;
        let mut input: &[u8] = match self.clients[idx].rx.take() {
            None => {
                buf = BytesMut::new();
                data
            }
            Some(tail) => {
                buf = *tail;
                buf.extend_from_slice(data);
                &buf[..]
            }
        };
        loop {
            let client = &mut self.clients[idx];
            if client.link != Link::Open || input.is_empty() {
                break;
            }
            let version = client.conn.version();
            let mut actions = std::mem::take(&mut self.scratch);
            // PUBLISH, the packet that matters for throughput, is read in place.
            let res = match version {
                Some(v) if input[0] >> 4 == 3 => {
                    protocol::decode_publish_view(input, v, max).map(|r| {
                        r.map(|(p, used)| {
                            client.conn.handle_publish(p, now, &mut actions);
                            used
                        })
                    })
                }
                _ => protocol::decode_packet(input, version, max).map(|r| {
                    r.map(|(packet, used)| {
                        client.conn.handle(packet, now, &mut actions);
                        used
                    })
                }),
            };
            let res = match res {
                Ok(Some(used)) => {
                    add(&self.metrics.packets_in, 1);
                    Ok(Some(used))
                }
                Ok(None) => Ok(None),
                Err(e) => {
                    tracing::debug!(peer = ?client.peer(), error = %e, "bad packet");
                    client.conn.on_decode_error(&e, now, &mut actions);
                    Err(())
                }
            };
            self.dispatch(idx, now, &mut actions);
            self.scratch = actions;
            self.run_work(now);
            match res {
                Ok(Some(used)) => {
                    input = &input[used..];
                    if !self.clients.contains(idx) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(()) => return,
            }
        }
        if !self.clients.contains(idx) {
            return;
        }
        let client = &mut self.clients[idx];
        if client.link != Link::Open || input.is_empty() {
            client.rx = None;
            return;
        }
        // Keep the tail, bounded: a packet never exceeds max_packet_size, and while CONNECT
        // waits for its hand-off the client may not flood us either.
        if input.len() > (max as usize).saturating_mul(2) {
            add(&self.metrics.protocol_errors, 1);
            self.drive(idx, now, |c, out| c.connection_lost(now, out));
            self.run_work(now);
            return;
        }
        let tail = BytesMut::from(input);
        drop(buf);
        self.clients[idx].rx = Some(Box::new(tail));
    }

    fn on_sent(&mut self, conn: ConnId, queued: usize, now: Instant) {
        let Some(idx) = self.client_index(conn) else {
            return;
        };
        let c = &mut self.clients[idx];
        c.queued = queued.min(u32::MAX as usize) as u32;
        // Drained: messages the session queued while the socket was full go out now.
        if queued == 0
            && c.link == Link::Open
            && c.conn.session().is_some_and(|s| s.queued_len() > 0)
        {
            self.drive(idx, now, |c, out| c.on_writable(now, out));
        }
        // Half drained: waiting QoS 0 messages follow (`overflow.rs`).
        let c = &self.clients[idx];
        if queued <= self.shared.cfg.send_queue_limit / 4
            && c.extra.as_ref().is_some_and(|e| e.qos0.is_some())
        {
            self.drain_qos0(idx, now);
        }
    }

    fn on_mail(&mut self, mail: Mail, now: Instant) {
        let bytes = mail.payload_bytes();
        if bytes > 0 {
            self.shared.mailbox_bytes[self.id as usize].fetch_sub(bytes, Ordering::Relaxed);
        }
        match mail {
            Mail::Publish(m) => {
                self.route_local(&m, now);
            }
            Mail::Deliver {
                session,
                msg,
                delivery,
                ack,
                fanout,
            } => {
                self.deliver_to(session, &msg, &delivery, now);
                if let Some((w, token)) = ack {
                    let reply = match fanout {
                        Some((seq, watermark, part)) => {
                            self.run_work(now);
                            self.note_routed(w, (seq, part), watermark, true);
                            Mail::FanoutRouted { token, seq }
                        }
                        None => Mail::SharedApplied { token },
                    };
                    self.post_after_commit(w, reply);
                }
            }
            Mail::TakeOver(t) => self.on_takeover(t, now),
            Mail::Handoff(h) => self.on_handoff(h, now),
            Mail::Forward {
                session,
                msg,
                delivery,
                routed,
            } => self.on_forward(session, msg, delivery, routed, now),
            Mail::Unforward { target, to } => self.on_unforward(target, to),
            Mail::ForwardDone { session } => self.on_forward_done(session, now),
            Mail::AuthResult(r) => self.on_auth_result(r, now),
            Mail::Shared { change, ack } => {
                self.apply_shared(change);
                if let Some((worker, token)) = ack {
                    self.post(worker, Mail::SharedApplied { token });
                }
            }
            Mail::SharedApplied { token } => self.on_shared_applied(token),
            Mail::Filter { from, filter, add } => self.apply_filter(from, &filter, add),
            Mail::PublishAcked { msg, ack, fanout } => {
                let matched = self.route_local(&msg, now);
                // Behind the barrier of what the routing logged, if anything.
                let reply = match fanout {
                    Some((seq, watermark)) => {
                        self.run_work(now);
                        self.note_routed(ack.0, (seq, 0), watermark, matched);
                        Mail::FanoutRouted { token: ack.1, seq }
                    }
                    None => Mail::SharedApplied { token: ack.1 },
                };
                self.post_after_commit(ack.0, reply);
            }
            Mail::FanoutRouted { token, seq } => {
                self.on_shared_applied(token);
                self.fanout_answered(seq);
            }
            Mail::Stored { epoch, .. } => self.on_stored(epoch, now),
            Mail::ClusterClaimed(c) => self.on_cluster_claimed(c, now),
            Mail::NodeFilter { node, filter, add } => self.apply_node_filter(node, &filter, add),
            Mail::ServeShared { group, msg } => self.serve_shared(&group, &msg, now),
            Mail::Fence => self.on_fence(now),
            Mail::DropStale { client_id, epoch } => self.drop_stale(&client_id, epoch, now),
            // Only the control thread is sent these.
            Mail::Cluster(_) => {}
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if self.shared.shutdown.load(Ordering::Relaxed) && !self.shutting_down {
            self.begin_shutdown(now);
        }
        if !self.paused.is_empty() {
            self.resume_paused(now);
        }
        self.on_timers(now);
        if self.id == 0 {
            self.maybe_publish_sys(now, now.duration_since(self.started));
        }
    }

    // --- timers -------------------------------------------------------------------------

    /// Make sure the wheel will look at this connection no later than its deadline.
    fn reschedule(&mut self, idx: usize) {
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        if c.link != Link::Open {
            return;
        }
        if let Some(d) = c.conn.deadline() {
            // The wheel fires a key at the tick its deadline falls in: a key already there
            // for that tick or an earlier one does the job.
            let tick = wheel_tick(self.started, d);
            if !c.armed || c.scheduled.later_than(tick) {
                c.armed = true;
                c.scheduled = Scheduled(tick);
                self.wheel.insert(TimerKey::conn(c.id), d);
            }
        }
    }

    /// Every timer of this worker fires here: a connection's deadline (CONNECT timeout or
    /// keep-alive, re-checked lazily: `session::keepalive` computes it, a reset only moved
    /// it), a delayed will or an offline session's expiry.
    fn on_timers(&mut self, now: Instant) {
        let mut expired = std::mem::take(&mut self.expired);
        loop {
            expired.clear();
            let more = self.wheel.advance(now, 4096, &mut expired);
            for key in expired.drain(..) {
                match key.timer() {
                    Timer::Conn(id) => self.on_conn_timer(id, now),
                    Timer::Session(key) => self.on_session_timer(key, now),
                }
            }
            self.run_work(now);
            if !more {
                break;
            }
        }
        self.expired = expired;
    }

    fn on_conn_timer(&mut self, id: ConnId, now: Instant) {
        let Some(idx) = self.client_index(id) else {
            return;
        };
        let c = &mut self.clients[idx];
        c.armed = false;
        if c.link != Link::Open {
            return;
        }
        match c.conn.deadline() {
            Some(d) if d <= now => {
                if c.conn.version().is_some() {
                    add(&self.metrics.keepalive_expired, 1);
                } else {
                    add(&self.metrics.connect_timeouts, 1);
                }
                self.drive(idx, now, |c, out| c.on_timer(now, out));
            }
            _ => self.reschedule(idx),
        }
    }

    /// A delayed will is due, or an offline session expires.
    fn on_session_timer(&mut self, key: SessionKey, now: Instant) {
        let Some(entry) = self.session_mut(key) else {
            return;
        };
        let SessionState::Offline(off) = &mut entry.state else {
            return;
        };
        let will_due = off
            .delayed_will
            .as_ref()
            .is_some_and(|(_, due)| *due <= now);
        let expired = off.expires_at.is_some_and(|t| t <= now);
        let deadline = off.expires_at;
        let mut will_went = false;
        if will_due || expired {
            if let Some((w, _)) = off.delayed_will.take() {
                self.publish_will(w, now);
                will_went = true;
            }
        }
        if expired {
            add(&self.metrics.sessions_expired, 1);
            self.end_offline(key, now);
        } else if will_went {
            // The will went: after a restart it must not go again.
            self.persist_offline(key, deadline, None);
        }
    }

    /// End an offline session (expired, or its node fenced): out of the index, the log and
    /// the ownership table. A will still waiting goes nowhere (the caller sent it if due).
    pub(super) fn end_offline(&mut self, key: SessionKey, now: Instant) {
        let Some(e) = self.drop_session_entry(key) else {
            return;
        };
        let (client_id, epoch) = (e.client_id.clone(), e.epoch);
        if let SessionState::Offline(off) = e.state {
            let s = off.session;
            self.mark_shared_offline(key, &s, false);
            self.unindex_session(key, &s);
            if s.is_durable() {
                self.persist_drop(&client_id, epoch, now);
            }
        }
        self.release_ownership(&client_id, key, epoch);
    }

    // --- back-pressure ------------------------------------------------------------------

    /// Pause reading from a client whose messages filled another worker's mailbox (see
    /// `post`); `resume_paused` reads from it again once the mailboxes have drained.
    fn pause_for_mailbox(&mut self, idx: usize) {
        let id = self.clients[idx].id;
        if !self.paused.contains(&id) {
            self.effects.push_back(Fx::PauseRecv(id));
            self.paused.push(id);
            add(&self.metrics.publishers_paused, 1);
        }
    }

    /// Resume the paused publishers once every other worker's mailbox is at most half full
    /// (and, in a cluster, no peer is congested). Until then their keep-alive is held: the
    /// broker, not the client, stopped reading.
    fn resume_paused(&mut self, now: Instant) {
        let half = self.shared.cfg.worker_mailbox_limit / 2;
        let drained = self
            .shared
            .mailbox_bytes
            .iter()
            .enumerate()
            .all(|(w, b)| w == self.id as usize || b.load(Ordering::Relaxed) <= half)
            && !self.cluster_congested();
        let mut paused = std::mem::take(&mut self.paused);
        paused.retain(|&id| {
            let Some(idx) = self.client_index(id) else {
                return false;
            };
            self.clients[idx].conn.on_bytes_received(now);
            if drained {
                self.effects.push_back(Fx::ResumeRecv(id));
            }
            !drained
        });
        self.paused = paused;
    }

    /// Graceful shutdown: tell every client, publish wills, close.
    fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        self.shut_every_client(now);
    }

    /// Tell every connected client the broker goes away (MQTT 5: DISCONNECT 0x8B; wills as
    /// their state machines decide) and close its connection.
    pub(super) fn shut_every_client(&mut self, now: Instant) {
        let idxs: Vec<usize> = self.clients.iter().map(|(i, _)| i).collect();
        for idx in idxs {
            if self.clients.get(idx).is_none_or(|c| c.link != Link::Open) {
                continue;
            }
            self.drive(idx, now, |c, out| c.shutdown(now, out));
            self.run_work(now);
            if self.clients.get(idx).is_some_and(|c| c.link == Link::Open) {
                self.close_client(idx, None, now);
            }
        }
    }
}

/// CONNECT refusals of the authentication layer (counted in `auth_*` metrics, not as protocol
/// errors).
fn is_auth_refusal(r: ReasonCode) -> bool {
    [
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ReasonCode::NOT_AUTHORIZED,
        ReasonCode::CONNECTION_RATE_EXCEEDED,
        ReasonCode::SERVER_BUSY,
    ]
    .contains(&r)
}

/// The wheel tick (of a wheel that started at `start`) a deadline falls in, rounded up as the
/// wheel rounds, modulo 2^32 (see [`Scheduled`]).
fn wheel_tick(start: Instant, deadline: Instant) -> u32 {
    let ns = deadline.saturating_duration_since(start).as_nanos();
    ns.div_ceil(WHEEL_TICK.as_nanos()) as u32
}

/// The wheel tick of a connection's key in the wheel, modulo 2^32 (4 bytes instead of an
/// `Instant`'s 16). Ticks are compared as sequence numbers: exact while two ticks are less
/// than 2^31 ticks (3.4 years) apart; a connection's deadline is at most 1.5 x 65,535 s (or
/// the CONNECT timeout) ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scheduled(u32);

impl Scheduled {
    /// This key fires after tick `t`.
    fn later_than(self, t: u32) -> bool {
        (t.wrapping_sub(self.0) as i32) < 0
    }
}

/// Bytes of the fixed-size slots one client and its session occupy in a core's tables.
pub(super) fn slot_bytes() -> usize {
    std::mem::size_of::<Client>() + std::mem::size_of::<SessionEntry>() + std::mem::size_of::<u32>()
}
