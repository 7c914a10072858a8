//! A ringmq cluster on etcd: membership, cluster-wide ClientId ownership, and routing between
//! nodes. The design, for an operator, is in docs/cluster.md; in short:
//!
//! - **etcd holds** each node's membership key (`{prefix}members/{node}` = its peer-link
//!   address) and one key per client id (`{prefix}clients/{id}` = `{node}/{incarnation}/{epoch}`),
//!   both under the node's lease. etcd never carries a message.
//! - **Ownership**: a CONNECT on any node puts its client id's key (one `put` with `prev_kv`,
//!   batched: up to 128 claims in one etcd transaction). etcd orders the puts, so of racing
//!   CONNECTs the last put owns the id, and each claimant learns whom it displaced: that node
//!   is asked over the peer link to take the session over (`wire::Frame::TakeOver`), exactly as
//!   a worker asks another worker (`broker/takeover.rs`): its connection gets DISCONNECT 0x8E,
//!   the will follows the same rules, and a continuing session travels back (`Handoff`).
//! - **Routing**: each node tells its peers which filters its sessions subscribe to (counts per
//!   filter, sent when a filter gains its first or loses its last subscriber, in full when a
//!   link comes up). A PUBLISH is forwarded once to each node with a matching filter and fanned
//!   out there by its workers; retained messages go to every node.
//! - **Peer links** are TCP with length-prefixed frames (`wire.rs`): every message and
//!   take-over frame is numbered, acknowledged, kept until acknowledged (bounded) and sent
//!   again on reconnect, the receiver dropping numbers it has seen: a link that breaks loses
//!   nothing and doubles nothing while both nodes live.
//! - **Fencing**: a node that cannot renew its lease for `lease_secs` (etcd unreachable, or
//!   the process stalled) closes every connection and ends every session it holds, since
//!   its keys are gone and others may own those ids now; it then registers anew.
//!
//! The control thread (`node.rs`) runs the etcd client and the peer links on a tokio
//! current-thread runtime; workers talk to it through [`Hub`], as they talk to each other
//! through their mailboxes, and it posts into their mailboxes like any worker.

#[cfg(feature = "cluster")]
pub mod node;
pub mod wire;

/// Without the `cluster` feature: a clear refusal to start as a cluster node.
#[cfg(not(feature = "cluster"))]
pub mod node {
    use std::sync::Arc;

    pub fn spawn(
        _shared: Arc<crate::broker::Shared>,
    ) -> std::io::Result<(std::thread::JoinHandle<()>, std::net::SocketAddr)> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this ringmq was built without clustering: cargo build --release --features cluster \
             (needs protoc: apt-get install protobuf-compiler)",
        ))
    }
}

use std::sync::atomic::AtomicBool;

use bytestring::ByteString;
use crossbeam_queue::SegQueue;

use crate::broker::Mail;
use crate::protocol::ReasonCode;
use crate::runtime::engine::ConnId;
use crate::session::{ConnectRequest, Message, Session};

/// The worker number that names the cluster control thread in mail (`Core::post`).
pub const CLUSTER: u16 = u16::MAX;

/// What the workers and the control thread share.
pub struct Hub {
    /// Mail for the control thread: [`ToCluster`] requests, and the take-over machinery's
    /// answers to the control thread as a claimant (`Mail::Handoff`, `Mail::Forward`, ...).
    pub inbox: SegQueue<Mail>,
    pub notify: tokio::sync::Notify,
    /// The node is fenced (its lease is lost): CONNECTs are refused until it rejoins.
    pub fenced: AtomicBool,
}

impl Hub {
    pub fn new() -> Hub {
        Hub {
            inbox: SegQueue::new(),
            notify: tokio::sync::Notify::new(),
            fenced: AtomicBool::new(false),
        }
    }

    pub fn post(&self, mail: Mail) {
        self.inbox.push(mail);
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

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
    /// A (non-shared) filter gained (`add`) or lost one (session, filter) subscription here.
    Filter { filter: ByteString, add: bool },
    /// A message published on this node, for the nodes whose filters match (retained ones:
    /// for every node's store).
    Publish(Message),
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

/// The client id that names `client_id`'s key in etcd is the id itself; ids are UTF-8 without
/// NUL (MQTT), so any of them is a valid key.
pub fn client_key(prefix: &str, client_id: &str) -> String {
    format!("{prefix}clients/{client_id}")
}

pub fn member_key(prefix: &str, node: &str) -> String {
    format!("{prefix}members/{node}")
}

/// The value of a client key: who claimed it, in which run, under which local epoch.
pub fn claim_value(node: &str, incarnation: u64, epoch: u64) -> String {
    format!("{node}/{incarnation}/{epoch}")
}

/// The node name of a claim value (`None`: not one of ours).
pub fn claim_node(value: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(value).ok()?;
    let mut it = s.rsplitn(3, '/');
    let _epoch = it.next()?;
    let _inc = it.next()?;
    it.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values_name_their_node() {
        let v = claim_value("node-a", 17, 42);
        assert_eq!(claim_node(v.as_bytes()), Some("node-a"));
        assert_eq!(claim_node(b"x/1/2"), Some("x"));
        // A node name with a slash still parses (the last two fields are numbers).
        assert_eq!(claim_node(b"a/b/1/2"), Some("a/b"));
        assert_eq!(claim_node(b"garbage"), None);
        assert_eq!(claim_node(&[0xff, b'/', b'1', b'/', b'2']), None);
    }
}
