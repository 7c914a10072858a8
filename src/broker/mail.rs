//! Messages between threads: worker to worker (the take-over handshake, routed messages) and
//! worker to password-verification thread and back. Each variant names the step it belongs to;
//! the take-over handshake itself reads top to bottom in `takeover.rs`.
//!
//! Mail between two workers is delivered in the order it was posted (one FIFO per pair); the
//! cut-over relies on it (a `Forward` never overtakes the `Handoff` before it). Nothing else is
//! assumed: mail from different workers interleaves in any order, and the deterministic
//! simulation (`crate::sim`) delivers it so.

use std::net::IpAddr;

use bytestring::ByteString;

use crate::ownership::SessionKey;
use crate::protocol::ReasonCode;
use crate::runtime::engine::ConnId;
use crate::session::{ConnectRequest, Delivery, Message, Session, Subscription};

/// A message to one worker.
pub enum Mail {
    /// A PUBLISH to match against this worker's (non-shared) subscriptions.
    Publish(Message),
    /// Deliver to one session of this worker (a shared-subscription pick).
    Deliver {
        session: SessionKey,
        msg: Message,
        delivery: Delivery,
        /// As in `PublishAcked`.
        ack: Option<(u16, u64)>,
        /// A part of a fan-out: (sequence number, the sender's watermark, part), see
        /// `persist.rs`; answered with `FanoutRouted`.
        fanout: Option<(u64, u64, u32)>,
    },
    /// Take-over step 2: take over the session `target` held here, for `claimant`.
    TakeOver(TakeOver),
    /// Take-over step 3's answer: the session (if it continues) for the claimant.
    Handoff(Handoff),
    /// Cut-over: a message the previous owner of a moved session matched for it. `routed`:
    /// matched by its subscription index (it may also reach the new owner through the new
    /// owner's own index; deduplicated), rather than picked for a shared subscription.
    Forward {
        session: SessionKey,
        msg: Message,
        delivery: Delivery,
        routed: bool,
    },
    /// Cut-over: the new owner indexed the moved session, the previous owner stops forwarding.
    /// `to` is the new owner's slot (a stale `Unforward` for an earlier move is ignored).
    Unforward { target: SessionKey, to: Claimant },
    /// Cut-over: the previous owner stopped forwarding (after every `Forward` it sent).
    ForwardDone { session: SessionKey },
    /// A password verification thread answered.
    AuthResult(Box<AuthResult>),
    /// Shared subscriptions: a change of one member, for every worker's view (`router.rs`).
    /// Only the member's own worker changes it, so every view applies its changes in order.
    /// `ack`: answer `SharedApplied` to that worker with this token.
    Shared {
        change: SharedChange,
        ack: Option<(u16, u64)>,
    },
    /// The change with this token is in the sender's view (also: a `PublishAcked` was
    /// routed there and what it changed is on disk).
    SharedApplied { token: u64 },
    /// A (non-shared) subscription of a session of worker `from` was added (`add`) or removed
    /// there: for every other worker's view of the filters subscribed anywhere (PUBACK 0x10,
    /// `router.rs`). Sent only with `no_matching_subscribers_reason` and more than one worker.
    Filter {
        from: u16,
        filter: ByteString,
        add: bool,
    },
    /// Durability `sync`: a QoS 1/2 PUBLISH whose acknowledgement waits for this worker to
    /// route it and commit what that changed; answer `SharedApplied { token }` to `ack.0`
    /// (behind this worker's commit barrier), or `FanoutRouted` for a fan-out: `fanout` is
    /// its (sequence number, the sender's watermark), see `persist.rs`.
    PublishAcked {
        msg: Message,
        ack: (u16, u64),
        fanout: Option<(u64, u64)>,
    },
    /// The answer to a `PublishAcked` of fan-out `seq` (as `SharedApplied { token }`).
    FanoutRouted { token: u64, seq: u64 },
    /// The new owner of a session stored it (or let it end): the sender's durable copy
    /// (`client_id`, `epoch`) can go (`persist.rs`).
    Stored { client_id: ByteString, epoch: u64 },
    /// To the cluster control thread (`crate::cluster`).
    Cluster(ToCluster),
    /// From the control thread: a claim of `cluster::ToCluster::Claim` answered.
    ClusterClaimed(Box<Claimed>),
    /// From the control thread: some other node's sessions gained (`add`) or lost their
    /// first / last subscription to `filter`. A plain filter is announced once for all
    /// nodes; a shared one (`$share/G/F`) per node, `node` being the control thread's number
    /// for it (the node then stands as one member of the group, see `broker/cluster.rs`).
    NodeFilter {
        node: u16,
        filter: ByteString,
        add: bool,
    },
    /// From the control thread: another node picked this node for the shared subscription
    /// `group` (`$share/G/F`): deliver `msg` to one of this node's members of it.
    ServeShared { group: ByteString, msg: Message },
    /// From the control thread: the node lost its lease (`Core::on_fence`).
    Fence,
    /// From the control thread: a session restored from the data dir is held by another
    /// node now (its client moved while this node was down): this stale copy goes, without
    /// its will.
    DropStale { client_id: ByteString, epoch: u64 },
}

/// A change to the shared-subscription views.
#[derive(Clone)]
pub enum SharedChange {
    Subscribe {
        group: ByteString,
        filter: ByteString,
        member: (u16, SessionKey),
        sub: Subscription,
    },
    Unsubscribe {
        group: ByteString,
        filter: ByteString,
        member: (u16, SessionKey),
    },
    /// The member's session is kept offline (true) or back online.
    Offline {
        member: (u16, SessionKey),
        offline: bool,
    },
}

impl Mail {
    /// The message counted against `worker_mailbox_limit`, if this is one.
    pub fn counted_message(&self) -> Option<&Message> {
        match self {
            Mail::Publish(m)
            | Mail::Deliver { msg: m, .. }
            | Mail::PublishAcked { msg: m, .. }
            | Mail::ServeShared { msg: m, .. } => Some(m),
            _ => None,
        }
    }

    /// Bytes counted against `worker_mailbox_limit` (topic + payload of a message).
    pub fn payload_bytes(&self) -> usize {
        self.counted_message().map_or(0, |m| m.queued_size())
    }
}

/// Who is asking for a session: the CONNECT's session slot and connection on its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant {
    pub worker: u16,
    pub session: SessionKey,
    pub conn: ConnId,
}

/// Step 2 of the take-over handshake (see `takeover.rs`).
pub struct TakeOver {
    pub client_id: ByteString,
    pub target: SessionKey,
    pub claimant: Claimant,
    pub clean_start: bool,
    pub username: Option<ByteString>,
}

/// Step 3's answer to a [`TakeOver`]; every `TakeOver` gets exactly one.
pub struct Handoff {
    pub claimant: Claimant,
    pub session: Option<Box<Session>>,
    /// The take-over was refused (policy): the claimant gets CONNACK "not authorized".
    pub refused: bool,
    /// (worker, slot) of the previous owner that keeps the session indexed and forwards to the
    /// claimant until told `Unforward` (cut-over).
    pub from: Option<(u16, SessionKey)>,
    /// Messages already delivered to the session by an earlier cut-over that is still going
    /// on: the claimant's own index may match them again and must not deliver them twice.
    pub delivered: Vec<Message>,
    /// A will waiting for its delay (and when it is due) that travels with the session: it is
    /// cancelled once a connection resumes the session, published if the session ends or its
    /// delay elapses first (`session::will::carried_on_takeover`).
    pub will: Option<(Message, std::time::Instant)>,
    /// The worker and epoch of the durable copy of this session on disk: told `Stored` once
    /// the claimant has written its own (or the session ended).
    pub origin: Option<(u16, u64)>,
}

impl Handoff {
    pub fn empty(claimant: Claimant) -> Handoff {
        Handoff {
            claimant,
            session: None,
            refused: false,
            from: None,
            delivered: Vec::new(),
            will: None,
            origin: None,
        }
    }
}

/// A CONNECT for a verification thread.
pub struct VerifyJob {
    pub worker: u16,
    pub conn: ConnId,
    pub peer: Option<IpAddr>,
    pub req: ConnectRequest,
}

/// A verification's outcome, for the worker that holds the connection.
pub struct AuthResult {
    pub conn: ConnId,
    pub peer: Option<IpAddr>,
    /// The CONNECT, password removed.
    pub req: ConnectRequest,
    pub ok: bool,
}

// --- the cluster control thread (`crate::cluster`) ------------------------------------

/// A worker's request to the control thread.
pub enum ToCluster {
    /// An authenticated CONNECT: claim its client id cluster-wide (and take the session over
    /// from the node that held it), then answer `Mail::ClusterClaimed`.
    Claim(Box<Claim>),
    /// The worker went on with a claim answered before (its local ownership is in place):
    /// take-overs by other nodes that waited for it may go.
    Claimed { client_id: ByteString },
    /// The session of `client_id` under `epoch` ended on this node: remove its key if it is
    /// still this claim's.
    Release { client_id: ByteString, epoch: u64 },
    /// A filter (a plain one, or a shared `$share/G/F`) gained (`add`) or lost one (session,
    /// filter) subscription here.
    Filter { filter: ByteString, add: bool },
    /// The sessions worker `worker` restored from the data dir (client id, epoch), sent once
    /// at start (an empty list too): the control thread checks each against etcd before the
    /// node takes CONNECTs.
    Restored {
        worker: u16,
        sessions: Vec<(ByteString, u64)>,
    },
    /// A message published on this node, for the nodes whose filters match (retained ones:
    /// for every node's store), and for the nodes picked for shared subscriptions: (node
    /// number, `$share/G/F`).
    Publish {
        msg: Message,
        groups: Vec<(u16, ByteString)>,
    },
}

pub struct Claim {
    pub worker: u16,
    pub conn: ConnId,
    pub epoch: u64,
    pub req: ConnectRequest,
}

/// The control thread's answer to a [`Claim`].
pub struct Claimed {
    pub conn: ConnId,
    pub epoch: u64,
    pub req: ConnectRequest,
    pub outcome: ClaimOutcome,
}

pub enum ClaimOutcome {
    /// The id is ours; no other node held a session that continues (a session held on this
    /// node is found by the local take-over as usual).
    Owned,
    /// The id is ours and the session continues from another node.
    Session {
        session: Box<Session>,
        will: Option<(Message, std::time::Instant)>,
    },
    /// Refuse the CONNECT with this reason code (0x88 Server unavailable while etcd cannot
    /// be reached or the node is fenced; 0x87 Not authorized when the holder refused).
    Refused(ReasonCode),
}
