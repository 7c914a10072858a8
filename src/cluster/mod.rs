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
//!   out there by its workers; retained messages go to every node. A shared subscription's
//!   group is announced per node, and every node stands as one member in the others' views
//!   of the group: the publishing worker picks one member cluster-wide (round-robin over
//!   its node's members and the other nodes), and a node picked serves the message to one
//!   member of its own.
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

pub mod hub;
#[cfg(feature = "cluster")]
pub mod node;
pub mod wire;

pub use hub::Hub;

/// Without the `cluster` feature: a clear refusal to start as a cluster node.
#[cfg(not(feature = "cluster"))]
#[path = "node_off.rs"]
pub mod node;

pub use crate::broker::mail::{Claim, ClaimOutcome, Claimed, ToCluster};

/// The worker number that names the cluster control thread in mail (`Core::post`).
pub const CLUSTER: u16 = u16::MAX;

/// In a worker's view of the shared-subscription groups, the member `(NODE_MEMBER + n, _)`
/// stands for node `n` (the control thread's number for it), which has members of its own.
pub const NODE_MEMBER: u16 = 0x8000;

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
