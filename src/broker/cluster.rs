//! The worker's side of a cluster (`crate::cluster`): what a core tells the node's control
//! thread and what it does with the control thread's mail. Off (no `[cluster]`), none of
//! this runs.
//!
//! - A CONNECT's client id is claimed cluster-wide before the local claim of
//!   `takeover.rs` step 1 (`Mail::ClusterClaimed` answers; a session that continues from
//!   another node comes with it and is installed as a hand-off would be).
//! - Every subscription added or removed here (plain or shared) is counted by the control
//!   thread, which tells the other nodes when a filter gains its first or loses its last
//!   subscriber.
//! - A PUBLISH entering on this node (a client's, or a will) goes to the control thread when
//!   another node's filters match it (`node_filters`, kept by `Mail::NodeFilter`), when a
//!   shared subscription's pick fell on another node, or always when it is retained. A
//!   message that came from another node is only routed locally.
//! - Shared subscriptions cluster-wide: another node with members of a group is one member
//!   `(NODE_MEMBER + node, _)` of this worker's view of the group, so the one round-robin
//!   pick of `router.rs` covers the whole cluster. A node picked gets the message with the
//!   group named (`Mail::ServeShared`) and gives it to one member of its own.

use std::time::Instant;

use bytestring::ByteString;

use super::core::{Core, SessionState};
use super::mail::{Claimant, Handoff, Mail};
use crate::cluster::{ClaimOutcome, Claimed, ToCluster, CLUSTER, NODE_MEMBER};
use crate::metrics::add;
use crate::ownership::SessionKey;
use crate::protocol::topic::parse_shared;
use crate::session::state::Subscription;
use crate::session::{ConnectRequest, Message};

impl Core {
    /// This node is part of a cluster.
    pub(super) fn clustered(&self) -> bool {
        self.shared.cluster.is_some()
    }

    /// The node lost its lease: sessions must not be kept (others may own their ids now).
    pub(super) fn fenced(&self) -> bool {
        self.shared
            .cluster
            .as_ref()
            .is_some_and(|h| h.fenced.load(std::sync::atomic::Ordering::Acquire))
    }

    fn tell_cluster(&mut self, m: ToCluster) {
        self.post(CLUSTER, Mail::Cluster(m));
    }

    /// Step 0 of a take-over in a cluster: ask the control thread to claim the id in etcd.
    pub(super) fn claim_in_cluster(&mut self, idx: usize, req: ConnectRequest) {
        add(&self.metrics.cluster_claims, 1);
        let claim = crate::cluster::Claim {
            worker: self.id,
            conn: self.clients[idx].id,
            epoch: self.shared.owners.new_epoch(),
            req,
        };
        self.tell_cluster(ToCluster::Claim(Box::new(claim)));
    }

    /// The control thread answered a claim.
    pub(super) fn on_cluster_claimed(&mut self, c: Box<Claimed>, now: Instant) {
        let Claimed {
            conn,
            epoch,
            req,
            outcome,
        } = *c;
        let client_id = (*req.client_id).clone();
        let idx = self
            .client_index(conn)
            .filter(|&i| self.clients[i].link == super::core::Link::Open);
        match (idx, outcome) {
            (Some(idx), ClaimOutcome::Refused(code)) => {
                self.drive(idx, now, |c, out| c.refuse_connect(code, now, out));
                self.give_up_claim(client_id, epoch);
            }
            (Some(idx), ClaimOutcome::Owned) => {
                self.connect_owned(idx, req, epoch, None, now);
                self.tell_cluster(ToCluster::Claimed { client_id });
            }
            (Some(idx), ClaimOutcome::Session { session, will }) => {
                add(&self.metrics.cluster_sessions_in, 1);
                self.connect_owned(idx, req, epoch, Some((session, will)), now);
                self.tell_cluster(ToCluster::Claimed {
                    client_id: client_id.clone(),
                });
                self.stored_for_cluster(client_id, epoch);
            }
            (None, outcome) => {
                // The connection went while the claim was out. A session that came from
                // another node is kept offline here as its own connection would have.
                if let ClaimOutcome::Session { session, will } = outcome {
                    // After whatever this logs (the session kept offline, below).
                    let stored = (client_id.clone(), epoch);
                    if session.session_expiry() > 0 {
                        let key = self.new_session_entry(
                            req.client_id.clone(),
                            epoch,
                            SessionState::Pending { conn: None },
                            false,
                        );
                        let me = crate::ownership::Owner {
                            worker: self.id,
                            session: key,
                            epoch,
                        };
                        if let Some(prev) = self.shared.owners.claim(&req.client_id, me) {
                            // A newer local CONNECT already holds the id: it wins; ours ends.
                            self.shared.owners.claim(&req.client_id, prev);
                            self.drop_session_entry(key);
                            self.publish_carried(will, now);
                        } else {
                            let claimant = Claimant {
                                worker: self.id,
                                session: key,
                                conn,
                            };
                            let mut h = Handoff::empty(claimant);
                            h.session = Some(session);
                            h.will = will;
                            self.on_handoff(h, now);
                            self.tell_cluster(ToCluster::Claimed { client_id });
                            self.stored_for_cluster(stored.0, stored.1);
                            return;
                        }
                    } else {
                        self.publish_carried(will, now);
                    }
                    // Not kept here: the other node's copy may go all the same.
                    self.stored_for_cluster(stored.0, stored.1);
                }
                self.give_up_claim(client_id, epoch);
            }
        }
    }

    /// A session that came from another node is ours now: once what this input logged is on
    /// disk (the session's image, if it is kept), the node it came from may drop its copy.
    fn stored_for_cluster(&mut self, client_id: ByteString, epoch: u64) {
        self.post_after_commit(CLUSTER, Mail::Stored { client_id, epoch });
    }

    /// A claim answered but not taken up: the control thread may go on with the id, and its
    /// key goes if it is still this claim's.
    fn give_up_claim(&mut self, client_id: ByteString, epoch: u64) {
        self.tell_cluster(ToCluster::Claimed {
            client_id: client_id.clone(),
        });
        self.tell_cluster(ToCluster::Release { client_id, epoch });
    }

    /// The session of `client_id` under `epoch` ended here (`release_ownership`).
    pub(super) fn release_in_cluster(&mut self, client_id: &str, epoch: u64) {
        if self.clustered() {
            let client_id = ByteString::from(client_id);
            self.tell_cluster(ToCluster::Release { client_id, epoch });
        }
    }

    /// A (session, filter) subscription was added or removed in this worker's trie.
    pub(super) fn filter_in_cluster(&mut self, filter: &str, add: bool) {
        if self.clustered() {
            let filter = ByteString::from(filter);
            self.tell_cluster(ToCluster::Filter { filter, add });
        }
    }

    /// A message that entered the broker on this node: to the other nodes that want it, and
    /// to those picked for its shared subscriptions (`groups`). `$SYS` topics are each
    /// node's own, but for `$SYS/cluster/{node}/...`, each node's cluster figures.
    pub(super) fn route_to_nodes(&mut self, msg: &Message, groups: Vec<(u16, ByteString)>) {
        if !self.clustered()
            || (msg.topic.starts_with("$SYS/") && !msg.topic.starts_with("$SYS/cluster/"))
        {
            return;
        }
        let retained = msg.retain && self.shared.cfg.retain_available;
        if retained || !groups.is_empty() || self.node_filters.matches(&msg.topic) {
            if msg.qos != crate::protocol::QoS::AtMostOnce && self.cluster_congested() {
                // Back-pressure: the publisher being read pauses until the peers catch up.
                self.mailbox_full = true;
            }
            let msg = msg.clone();
            self.tell_cluster(ToCluster::Publish { msg, groups });
        }
    }

    /// A linked peer is behind on this node's messages (`Hub::congested`).
    pub(super) fn cluster_congested(&self) -> bool {
        self.shared
            .cluster
            .as_ref()
            .is_some_and(|h| h.congested.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The node a shared-subscription member stands for, if it stands for one.
    pub(super) fn node_member(m: (u16, SessionKey)) -> Option<u16> {
        (m.0 >= NODE_MEMBER && m.0 != CLUSTER).then(|| m.0 - NODE_MEMBER)
    }

    /// `$share/G/F` of a group of this worker's view.
    pub(super) fn shared_key(&self, g: crate::routing::shared::GroupId) -> ByteString {
        let (name, filter) = self.shared_view.describe(g).unwrap_or_default();
        ByteString::from(format!("$share/{name}/{filter}"))
    }

    /// `Mail::NodeFilter`: node `node`'s sessions gained or lost a subscription to `filter`.
    /// A plain filter goes into the view of every other node's filters (kept per filter, the
    /// control thread counts per node); a shared one makes the node a member of the group
    /// here, or no longer one.
    pub(super) fn apply_node_filter(&mut self, node: u16, filter: &ByteString, add: bool) {
        let Some((group, f)) = parse_shared(filter) else {
            self.node_filters.apply(0, filter, add);
            return;
        };
        let member = (
            NODE_MEMBER + node,
            SessionKey {
                index: 0,
                generation: 0,
            },
        );
        if !add {
            self.shared_view.unsubscribe(group, f, member);
            return;
        }
        let sub = Subscription {
            options: Default::default(),
            subscription_id: None,
        };
        if self.shared_view.subscribe(group, f, member, sub).is_err() {
            tracing::warn!(%filter, "shared filter too deep, not indexed");
        }
    }

    /// `Mail::ServeShared`: another node picked this one for `group`: one member here gets
    /// the message (online ones first), from whichever worker holds its session.
    pub(super) fn serve_shared(&mut self, group: &str, msg: &Message, now: Instant) {
        let pick = parse_shared(group)
            .and_then(|(name, f)| self.shared_view.group(name, f))
            .and_then(|g| {
                self.shared_view
                    .pick_online_where(g, |m| Self::node_member(m).is_none())
            })
            .map(|(m, sub)| (m, *sub));
        let Some((member, sub)) = pick else {
            // Its last member here went while the message was on its way.
            add(&self.metrics.cluster_drops, 1);
            tracing::debug!(%group, "cluster: no member left here for a shared message");
            return;
        };
        self.deliver_to_member(member, &sub, msg, None, now);
    }

    /// The sessions restored from the data dir, for the control thread to check against
    /// etcd (every worker reports once, with an empty list too).
    pub(super) fn restored_in_cluster(&mut self, sessions: Vec<(ByteString, u64)>) {
        let worker = self.id;
        self.tell_cluster(ToCluster::Restored { worker, sessions });
    }

    /// `Mail::DropStale`: the restored session of `client_id` (under `epoch`) is held by
    /// another node: it ends here without a will (it continued there).
    pub(super) fn drop_stale(&mut self, client_id: &str, epoch: u64, now: Instant) {
        let Some(owner) = self.shared.owners.get(client_id) else {
            return;
        };
        if owner.worker != self.id || owner.epoch != epoch {
            return;
        }
        let offline = self
            .session(owner.session)
            .is_some_and(|e| matches!(e.state, SessionState::Offline(_)));
        if offline {
            tracing::info!(%client_id, "cluster: a restored session is held by another node; this copy ends");
            add(&self.metrics.cluster_stale_sessions, 1);
            self.end_offline(owner.session, now);
        }
    }

    /// `Mail::Fence`: the node lost its lease. Every connection is closed (MQTT 5: DISCONNECT
    /// 0x8B, wills as at a shutdown) and every session ends, since other nodes may own the
    /// ids now; sessions of connections still closing end at their close (`fenced`).
    pub(super) fn on_fence(&mut self, now: Instant) {
        self.shut_every_client(now);
        let offline: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, e)| matches!(e.state, SessionState::Offline(_)))
            .map(|(i, e)| crate::ownership::SessionKey {
                index: i as u32,
                generation: e.generation,
            })
            .collect();
        for key in offline {
            self.end_offline(key, now);
            add(&self.metrics.cluster_fenced_sessions, 1);
        }
    }
}
