//! The cluster control thread: the etcd client (lease, membership, claims), the peer links,
//! and the node-level views (which filters each node subscribes to), on a tokio
//! current-thread runtime of its own. Nothing here runs on a worker's ring.
//!
//! One task, [`Node::run`], owns all state; the other tasks (lease keeper, membership watch,
//! etcd requests, one outgoing link per peer, one reader per incoming connection) only do
//! I/O and report to it through one channel, so every decision is made in one place, in the
//! order the events arrived.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::wire::{self, Frame, Outcome};
use super::{claim_node, claim_value, client_key, member_key, Claim, ClaimOutcome, Claimed};
use super::{ToCluster, CLUSTER};
use crate::broker::mail::{Claimant, Handoff, TakeOver};
use crate::broker::{Mail, Shared};
use crate::metrics::{add, WorkerMetrics};
use crate::ownership::{Owner, SessionKey};
use crate::protocol::{QoS, ReasonCode};
use crate::routing::trie::SubscriptionTrie;
use crate::runtime::engine::ConnId;
use crate::session::Message;

/// etcd's default limit of operations in one transaction.
const MAX_TXN_OPS: usize = 128;
/// etcd requests in flight at once (claims and releases; each a transaction).
const MAX_TXNS_IN_FLIGHT: usize = 8;
/// An outgoing link with nothing else to send sends a `Ping` this often; the peer answers it.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A link on which nothing was heard for this long (or a write that does not finish in it)
/// is closed: a cut link is found in seconds, not when TCP gives up after many minutes. The
/// outgoing side then reconnects with backoff and sends again what was not acknowledged.
const LINK_TIMEOUT: Duration = Duration::from_secs(4);

/// Start the control thread. The peer-link listener is bound here, so a bad address fails
/// the start; its bound address is what the node announces.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<(std::thread::JoinHandle<()>, SocketAddr)> {
    let cfg = &shared.cfg.cluster;
    let listen = cfg
        .listen
        .expect("validated: a cluster node has a peer-link address");
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let t = std::thread::Builder::new()
        .name("ringmq-cluster".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cluster: no runtime; the node stays fenced");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cluster: peer listener");
                        return;
                    }
                };
                Node::new(shared, addr).run(listener).await;
            });
        })?;
    Ok((t, addr))
}

/// What the I/O tasks report to [`Node::run`].
enum Event {
    /// The lease keeper has a lease and registered the member key under it.
    Registered {
        lease: i64,
    },
    /// The lease could not be renewed in time: fence.
    LeaseLost,
    /// Membership: a node (other than this one) is up at `addr`, or gone (`None`).
    Member {
        node: String,
        addr: Option<SocketAddr>,
    },
    /// An etcd claim transaction finished: per claim, the value it replaced.
    Claims {
        batch: Vec<u64>,
        result: Result<Vec<Option<Vec<u8>>>, String>,
    },
    Releases {
        keys: Vec<String>,
        ok: bool,
    },
    /// Restored sessions checked against etcd (`check_restored`).
    Restored {
        items: Vec<Restore>,
        result: Result<Vec<Checked>, String>,
    },
    /// A frame from `node` (run `incarnation`) on an incoming link.
    Frame {
        node: String,
        incarnation: u64,
        frame: Frame,
    },
    /// The outgoing link to `node` connected (`true`) or broke.
    Link {
        node: String,
        up: bool,
    },
}

/// A session restored from the data dir, to check against etcd before the node serves:
/// its key is put under this node's lease if it is absent, or holds `expect` (a value of
/// this node's from before the restart); a key another node holds makes the copy stale.
#[derive(Clone)]
struct Restore {
    client_id: ByteString,
    worker: u16,
    epoch: u64,
    expect: Option<Vec<u8>>,
}

/// What etcd said of one [`Restore`].
enum Checked {
    /// The key is this node's now.
    Mine,
    /// The key holds this value instead (check again, or another node holds the id).
    Holds(Option<Vec<u8>>),
}

/// A claim on its way: the worker's request, then what it waits for.
struct Pending {
    claim: Box<Claim>,
    key: String,
    /// Waiting for the node that held the id to hand it over (`TakeOver` sent), since.
    remote: Option<(String, Instant)>,
}

/// An outgoing link: its task, the frames for it, and their bytes not yet acknowledged.
struct Peer {
    tx: mpsc::UnboundedSender<Frame>,
    queued: Arc<AtomicUsize>,
    up: bool,
    task: tokio::task::JoinHandle<()>,
}

/// A take-over another node asked of this one, waiting for the local hand-off.
struct Serving {
    node: String,
    token: u64,
    client_id: ByteString,
    owner: Owner,
}

struct Node {
    shared: Arc<Shared>,
    hub: Arc<super::Hub>,
    metrics: Arc<WorkerMetrics>,
    name: String,
    addr: SocketAddr,
    /// This run of the node (a restarted node has another).
    incarnation: u64,
    /// Link tasks started so far (each has run `incarnation + its number` in `Hello`).
    links_started: u64,
    /// The worker that serves the next shared-subscription message from another node.
    serve_turn: usize,
    /// Workers posted to in this pass, woken at its end.
    to_wake: Vec<std::cell::Cell<bool>>,
    /// Workers whose restored sessions have not been reported yet (data dir only): the node
    /// takes no CONNECT before every restored session is checked against etcd.
    restore_reports: usize,
    restore_queue: Vec<Restore>,
    restores_in_flight: usize,
    /// Sessions handed to another node whose durable copy here waits for that node to have
    /// stored its own: (node, its claim token) -> (worker, client id, epoch) of the copy.
    awaiting_stored: HashMap<(String, u64), (u16, ByteString, u64)>,
    /// Sessions that came from another node, until stored here: (client id, the claim's
    /// epoch) -> (node, token) to tell `Stored`.
    stored_owed: HashMap<(ByteString, u64), (String, u64)>,
    prefix: String,
    lease_secs: u64,
    lease: Option<i64>,
    client: Option<Client>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    peers: HashMap<String, Peer>,
    /// Claims by id, queued for etcd (in order) or waiting.
    pending: HashMap<u64, Pending>,
    claim_queue: VecDeque<u64>,
    /// Client keys in a claim transaction now, and the number of those in flight.
    keys_in_flight: HashSet<String>,
    txns_in_flight: usize,
    release_queue: VecDeque<(String, String)>,
    next_id: u64,
    /// Claims per client id not yet confirmed by the worker (`ToCluster::Claimed`); take-overs
    /// asked by other nodes for such an id wait in `deferred`.
    claiming: HashMap<ByteString, usize>,
    deferred: HashMap<ByteString, Vec<(String, Frame)>>,
    serving: HashMap<u64, Serving>,
    /// Subscribed filters here: (session, filter) count per filter.
    local_filters: HashMap<ByteString, u32>,
    /// Per other node: its filters, and the trie of them all keyed by node index.
    node_index: HashMap<String, u16>,
    node_filters: HashMap<String, HashSet<ByteString>>,
    trie: SubscriptionTrie<u16, ()>,
    /// Nodes per filter (for the workers' one-count view).
    filter_nodes: HashMap<ByteString, u32>,
    /// Per sending node: (incarnation, last sequence number handled).
    seen: HashMap<String, (u64, u64)>,
}

impl Node {
    fn new(shared: Arc<Shared>, addr: SocketAddr) -> Node {
        let hub = shared.cluster.clone().expect("a cluster node has a hub");
        let cfg = &shared.cfg.cluster;
        let (tx, rx) = mpsc::unbounded_channel();
        let workers = shared.workers();
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()) << 40;
        // Fenced until registered: no CONNECT is accepted before the node holds a lease.
        hub.fenced.store(true, Ordering::Release);
        Node {
            metrics: shared.metrics[workers].clone(),
            name: cfg.node_name.clone().unwrap_or_default(),
            prefix: cfg.prefix.clone(),
            lease_secs: cfg.lease_secs,
            addr,
            incarnation,
            links_started: 0,
            serve_turn: 0,
            to_wake: (0..workers).map(|_| std::cell::Cell::new(false)).collect(),
            restore_reports: if shared.cfg.data_dir.is_some() {
                workers
            } else {
                0
            },
            restore_queue: Vec::new(),
            restores_in_flight: 0,
            awaiting_stored: HashMap::new(),
            stored_owed: HashMap::new(),
            lease: None,
            client: None,
            tx,
            rx,
            peers: HashMap::new(),
            pending: HashMap::new(),
            claim_queue: VecDeque::new(),
            keys_in_flight: HashSet::new(),
            txns_in_flight: 0,
            release_queue: VecDeque::new(),
            next_id: 1,
            claiming: HashMap::new(),
            deferred: HashMap::new(),
            serving: HashMap::new(),
            local_filters: HashMap::new(),
            node_index: HashMap::new(),
            node_filters: HashMap::new(),
            trie: SubscriptionTrie::new(),
            filter_nodes: HashMap::new(),
            seen: HashMap::new(),
            hub,
            shared,
        }
    }

    async fn run(mut self, listener: tokio::net::TcpListener) {
        let endpoints = self.shared.cfg.cluster.etcd.clone();
        tokio::spawn(accept_loop(listener, self.tx.clone()));
        let client = connect_etcd(&endpoints).await;
        self.client = Some(client.clone());
        tokio::spawn(keep_lease(
            client.clone(),
            self.tx.clone(),
            member_key(&self.prefix, &self.name),
            self.addr.to_string(),
            self.lease_secs,
        ));
        tokio::spawn(watch_members(
            client,
            self.tx.clone(),
            format!("{}members/", self.prefix),
            self.name.clone(),
        ));
        tracing::info!(node = %self.name, peer_link = %self.addr, etcd = ?endpoints, "cluster node starting");
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let hub = self.hub.clone();
        loop {
            tokio::select! {
                _ = hub.notify.notified() => {}
                ev = self.rx.recv() => match ev {
                    Some(ev) => {
                        self.on_event(ev);
                        // What else is ready goes in this pass (one wake per worker for all).
                        for _ in 0..1024 {
                            let Ok(ev) = self.rx.try_recv() else { break };
                            self.on_event(ev);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.on_tick(),
            }
            while let Some(m) = self.hub.inbox.pop() {
                self.on_mail(m);
            }
            self.wake_workers();
            self.flush_etcd();
            if self.shared.shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        // A clean stop gives the ids up at once rather than after the lease.
        if let (Some(mut c), Some(lease)) = (self.client.take(), self.lease) {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(lease)).await;
        }
        for p in self.peers.values() {
            p.task.abort();
        }
    }

    fn on_tick(&mut self) {
        // Publishers paused for a congested peer go on once every linked peer's queue is at
        // most half full (a peer that is not linked does not hold them: see `admit`).
        if self.hub.congested.load(Ordering::Relaxed) {
            let half = self.shared.cfg.cluster.peer_queue_bytes / 2;
            let still = self
                .peers
                .values()
                .any(|p| p.up && p.queued.load(Ordering::Relaxed) > half);
            if !still {
                self.hub.congested.store(false, Ordering::Relaxed);
            }
        }
        // Claims waiting too long for a node that neither answers nor leaves: refused (the
        // `TakeOver` stays queued on its link, and closes the old connection when it heals).
        let limit = Duration::from_secs(self.lease_secs * 2);
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.remote.as_ref().is_some_and(|(_, t)| t.elapsed() > limit))
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            tracing::warn!("cluster: take-over unanswered by the holder; CONNECT refused");
            self.answer(id, ClaimOutcome::Refused(ReasonCode::SERVER_UNAVAILABLE));
        }
    }

    // --- mail from the workers ------------------------------------------------------------

    fn on_mail(&mut self, m: Mail) {
        match m {
            Mail::Cluster(ToCluster::Claim(c)) => self.on_claim(c),
            Mail::Cluster(ToCluster::Claimed { client_id }) => self.on_claimed(client_id),
            Mail::Cluster(ToCluster::Release { client_id, epoch }) => {
                if let Some(lease) = self.lease {
                    let v = claim_value(&self.name, lease as u64, epoch);
                    self.release_queue
                        .push_back((client_key(&self.prefix, &client_id), v));
                }
            }
            Mail::Cluster(ToCluster::Filter { filter, add }) => self.on_local_filter(filter, add),
            Mail::Cluster(ToCluster::Publish { msg, groups }) => self.forward(msg, groups),
            Mail::Handoff(h) => self.on_local_handoff(h),
            Mail::TakeOver(t) => {
                // A CONNECT here displaced our stand-in claim: nothing to hand it.
                self.post(t.claimant.worker, Mail::Handoff(Handoff::empty(t.claimant)));
            }
            Mail::Cluster(ToCluster::Restored { worker, sessions }) => {
                self.restore_reports = self.restore_reports.saturating_sub(1);
                self.restore_queue
                    .extend(sessions.into_iter().map(|(client_id, epoch)| Restore {
                        client_id,
                        worker,
                        epoch,
                        expect: None,
                    }));
                self.maybe_unfence();
            }
            // A session that came from another node is stored here (behind the worker's
            // commit): that node's durable copy may go.
            Mail::Stored { client_id, epoch } => {
                if let Some((node, token)) = self.stored_owed.remove(&(client_id, epoch)) {
                    self.send(&node, Frame::Stored { seq: 0, token });
                }
            }
            // Messages relayed during a cut-over to the stand-in: the session left this node.
            Mail::Forward { .. } => add(&self.metrics.cluster_drops, 1),
            _ => {}
        }
    }

    /// Mail to a worker; it is woken once at the end of this pass (`wake_workers`), however
    /// many it got.
    fn post(&self, worker: u16, mail: Mail) {
        self.shared.push_from_outside(worker, mail);
        self.to_wake[worker as usize].set(true);
    }

    fn wake_workers(&self) {
        for (w, flag) in self.to_wake.iter().enumerate() {
            if flag.replace(false) {
                self.shared.wake_from_outside(w as u16);
            }
        }
    }

    fn on_claim(&mut self, c: Box<Claim>) {
        add(&self.metrics.cluster_claims, 1);
        let id = self.next_id;
        self.next_id += 1;
        *self.claiming.entry((*c.req.client_id).clone()).or_default() += 1;
        let key = client_key(&self.prefix, &c.req.client_id);
        let pending = Pending {
            claim: c,
            key,
            remote: None,
        };
        self.pending.insert(id, pending);
        if self.hub.fenced.load(Ordering::Acquire) || self.lease.is_none() {
            self.answer(id, ClaimOutcome::Refused(ReasonCode::SERVER_UNAVAILABLE));
        } else {
            self.claim_queue.push_back(id);
        }
    }

    /// Answer a claim to its worker.
    fn answer(&mut self, id: u64, outcome: ClaimOutcome) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let Claim {
            worker,
            conn,
            epoch,
            req,
        } = *p.claim;
        let claimed = Claimed {
            conn,
            epoch,
            req,
            outcome,
        };
        self.post(worker, Mail::ClusterClaimed(Box::new(claimed)));
    }

    /// The worker went on with a claim: take-overs of the id by other nodes may go.
    fn on_claimed(&mut self, client_id: ByteString) {
        let left = match self.claiming.get_mut(&client_id) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.claiming.remove(&client_id);
            if let Some(list) = self.deferred.remove(&client_id) {
                for (node, f) in list {
                    self.serve_takeover(node, f);
                }
            }
        }
    }

    // --- etcd: claims and releases ---------------------------------------------------------

    fn flush_etcd(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let Some(lease) = self.lease else {
            return;
        };
        self.check_restored(&client, lease);
        while self.txns_in_flight < MAX_TXNS_IN_FLIGHT && !self.claim_queue.is_empty() {
            // One put per key per transaction; a second claim of a key in flight waits
            // (claims of one id reach etcd in the order they were made).
            let mut batch = Vec::new();
            let mut ops = Vec::new();
            let mut rest = VecDeque::new();
            let mut keys = HashSet::new();
            while let Some(id) = self.claim_queue.pop_front() {
                let Some(p) = self.pending.get(&id) else {
                    continue;
                };
                if batch.len() == MAX_TXN_OPS
                    || self.keys_in_flight.contains(&p.key)
                    || keys.contains(&p.key)
                {
                    rest.push_back(id);
                    if batch.len() == MAX_TXN_OPS {
                        rest.extend(self.claim_queue.drain(..));
                    }
                    continue;
                }
                let v = claim_value(&self.name, lease as u64, p.claim.epoch);
                let opts = PutOptions::new().with_lease(lease).with_prev_key();
                ops.push(TxnOp::put(p.key.clone(), v, Some(opts)));
                keys.insert(p.key.clone());
                batch.push(id);
            }
            self.claim_queue = rest;
            if batch.is_empty() {
                break;
            }
            self.keys_in_flight.extend(keys);
            self.txn(&client, ops, move |result| {
                let result = result.map(|ops| {
                    ops.into_iter()
                        .map(|op| match op {
                            TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.value().to_vec()),
                            _ => None,
                        })
                        .collect()
                });
                Event::Claims { batch, result }
            });
        }
        if self.txns_in_flight < MAX_TXNS_IN_FLIGHT && !self.release_queue.is_empty() {
            let n = self.release_queue.len().min(MAX_TXN_OPS);
            let list: Vec<(String, String)> = self.release_queue.drain(..n).collect();
            // Each release deletes the key only if it still holds this claim's value.
            let ops: Vec<TxnOp> = list
                .iter()
                .map(|(k, v)| {
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::value(k.clone(), CompareOp::Equal, v.clone())])
                            .and_then([TxnOp::delete(k.clone(), None)]),
                    )
                })
                .collect();
            let keys: Vec<String> = list.into_iter().map(|(k, _)| k).collect();
            self.txn(&client, ops, move |result| Event::Releases {
                keys,
                ok: result.is_ok(),
            });
        }
    }

    /// Run one etcd transaction of `ops` (counted in `txns_in_flight`, bounded by a timeout)
    /// and report its answers, or the error, as the event `done` makes of them.
    fn txn(
        &mut self,
        client: &Client,
        ops: Vec<TxnOp>,
        done: impl FnOnce(Result<Vec<TxnOpResponse>, String>) -> Event + Send + 'static,
    ) {
        self.txns_in_flight += 1;
        let mut c = client.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let r =
                tokio::time::timeout(Duration::from_secs(5), c.txn(Txn::new().and_then(ops))).await;
            let result = match r {
                Ok(Ok(resp)) => Ok(resp.op_responses()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".into()),
            };
            let _ = tx.send(done(result));
        });
    }

    fn on_claims(&mut self, batch: Vec<u64>, result: Result<Vec<Option<Vec<u8>>>, String>) {
        self.txns_in_flight -= 1;
        for id in &batch {
            if let Some(p) = self.pending.get(id) {
                self.keys_in_flight.remove(&p.key);
            }
        }
        let prevs = match result {
            Ok(v) if v.len() == batch.len() => v,
            Ok(_) | Err(_) => {
                let e = match &result {
                    Err(e) => e.clone(),
                    Ok(_) => "wrong number of answers".into(),
                };
                add(&self.metrics.cluster_etcd_errors, 1);
                tracing::warn!(error = %e, claims = batch.len(),
                    "cluster: etcd claim failed; CONNECTs refused (server unavailable)");
                for id in batch {
                    self.answer(id, ClaimOutcome::Refused(ReasonCode::SERVER_UNAVAILABLE));
                }
                return;
            }
        };
        for (id, prev) in batch.into_iter().zip(prevs) {
            let holder = prev.as_deref().and_then(claim_node).map(str::to_string);
            match holder {
                // A session held here is found by the local take-over.
                None => self.answer(id, ClaimOutcome::Owned),
                Some(n) if n == self.name => self.answer(id, ClaimOutcome::Owned),
                Some(n) if !self.peers.contains_key(&n) => {
                    // Not a member (any more): its sessions went with it.
                    self.answer(id, ClaimOutcome::Owned)
                }
                Some(n) => self.ask_takeover(id, n),
            }
        }
    }

    fn ask_takeover(&mut self, id: u64, node: String) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        add(&self.metrics.cluster_remote_takeovers, 1);
        p.remote = Some((node.clone(), Instant::now()));
        let f = Frame::TakeOver {
            seq: 0,
            token: id,
            client_id: (*p.claim.req.client_id).clone(),
            clean_start: p.claim.req.clean_start,
            username: p.claim.req.username.clone(),
        };
        self.send(&node, f);
    }

    // --- take-over asked by another node ---------------------------------------------------

    /// `TakeOver` from another node: run the local take-over machinery with this thread as
    /// the claimant (a stand-in owner in the ownership table), unless a CONNECT of this node
    /// for the same id is still being claimed (then after it).
    fn serve_takeover(&mut self, node: String, f: Frame) {
        let Frame::TakeOver {
            token,
            client_id,
            clean_start,
            username,
            ..
        } = &f
        else {
            return;
        };
        if self.claiming.contains_key(client_id) {
            self.deferred
                .entry(client_id.clone())
                .or_default()
                .push((node, f));
            return;
        }
        let id = crate::session::ClientId::new(client_id.clone());
        let local = self.next_id;
        self.next_id += 1;
        let key = SessionKey {
            index: local as u32,
            generation: (local >> 32) as u32,
        };
        let owner = Owner {
            worker: CLUSTER,
            session: key,
            epoch: self.shared.owners.new_epoch(),
        };
        match self.shared.owners.claim(&id, owner) {
            None => {
                self.shared.owners.release(client_id, owner);
                self.send(
                    &node,
                    Frame::Handoff {
                        seq: 0,
                        token: *token,
                        outcome: Outcome::None,
                    },
                );
            }
            Some(prev) => {
                let claimant = Claimant {
                    worker: CLUSTER,
                    session: key,
                    conn: ConnId {
                        slot: u32::MAX,
                        generation: 0,
                    },
                };
                self.serving.insert(
                    local,
                    Serving {
                        node,
                        token: *token,
                        client_id: client_id.clone(),
                        owner,
                    },
                );
                let t = TakeOver {
                    client_id: client_id.clone(),
                    target: prev.session,
                    claimant,
                    clean_start: *clean_start,
                    username: username.clone(),
                };
                if prev.worker == CLUSTER {
                    // An earlier stand-in still waiting: it hands nothing.
                    self.on_local_handoff(Handoff::empty(claimant));
                } else {
                    self.post(prev.worker, Mail::TakeOver(t));
                }
            }
        }
    }

    /// The local hand-off to the stand-in claimant: send the session to the node that asked.
    fn on_local_handoff(&mut self, h: Handoff) {
        let local =
            u64::from(h.claimant.session.index) | u64::from(h.claimant.session.generation) << 32;
        let Some(s) = self.serving.remove(&local) else {
            return;
        };
        if let Some((w, target)) = h.from {
            // A cut-over started for the stand-in: stop it (nothing is relayed across nodes).
            self.post(
                w,
                Mail::Unforward {
                    target,
                    to: h.claimant,
                },
            );
        }
        // The durable copy here goes once the other node has stored the session (its
        // `Stored`), or at once when no session travels.
        if let Some((w, epoch)) = h.origin {
            let client_id = s.client_id.clone();
            if h.session.is_some() && !h.refused {
                self.awaiting_stored
                    .insert((s.node.clone(), s.token), (w, client_id, epoch));
            } else {
                self.post(w, Mail::Stored { client_id, epoch });
            }
        }
        let outcome = if h.refused {
            Outcome::Refused
        } else if let Some(session) = h.session {
            add(&self.metrics.cluster_sessions_out, 1);
            Outcome::Session {
                image: crate::storage::record::session_bytes(&session, None),
                will: h.will,
            }
        } else {
            Outcome::None
        };
        self.shared.owners.release(&s.client_id, s.owner);
        self.send(
            &s.node,
            Frame::Handoff {
                seq: 0,
                token: s.token,
                outcome,
            },
        );
    }

    /// `Handoff` from the node that held an id we claimed.
    fn on_remote_handoff(&mut self, node: String, token: u64, outcome: Outcome) {
        let Some(p) = self.pending.get(&token) else {
            return; // answered meanwhile (refused after waiting too long)
        };
        let client_id = (*p.claim.req.client_id).clone();
        if matches!(outcome, Outcome::Session { .. }) {
            // The worker tells `Stored` once it has the session on disk (or it ended).
            self.stored_owed
                .insert((client_id.clone(), p.claim.epoch), (node, token));
        }
        let outcome = match outcome {
            Outcome::None => ClaimOutcome::Owned,
            Outcome::Refused => ClaimOutcome::Refused(ReasonCode::NOT_AUTHORIZED),
            Outcome::Session { image, will } => {
                match crate::storage::record::session_from_bytes(&image, &client_id) {
                    Ok((session, _)) => ClaimOutcome::Session {
                        session: Box::new(session),
                        will,
                    },
                    Err(_) => {
                        tracing::error!(%client_id, "cluster: a handed-off session does not parse; starting a new one");
                        ClaimOutcome::Owned
                    }
                }
            }
        };
        self.answer(token, outcome);
    }

    // --- routing -------------------------------------------------------------------------

    fn on_local_filter(&mut self, filter: ByteString, add: bool) {
        if count_change(&mut self.local_filters, &filter, add) {
            for p in self.peers.values() {
                let _ = p.tx.send(Frame::Filter {
                    filter: filter.clone(),
                    add,
                });
            }
        }
    }

    /// A message published here: once to each node with a matching filter or picked for a
    /// shared subscription (`groups`: node number, `$share/G/F`); retained ones to every node
    /// (for its store).
    fn forward(&self, msg: Message, groups: Vec<(u16, ByteString)>) {
        // Nodes with a matching filter (one trie entry per filter and node: few, and
        // possibly repeated).
        let mut matching: Vec<u16> = Vec::new();
        self.trie.matches(&msg.topic, |n, _| matching.push(n));
        let size = msg.queued_size() + 64;
        for (name, peer) in &self.peers {
            let Some(&i) = self.node_index.get(name) else {
                continue;
            };
            let route = matching.contains(&i);
            let picked: Vec<ByteString> = groups
                .iter()
                .filter(|(n, _)| *n == i)
                .map(|(_, g)| g.clone())
                .collect();
            if !route && !msg.retain && picked.is_empty() {
                continue;
            }
            let queued = peer.queued.load(Ordering::Relaxed);
            let limit = self.shared.cfg.cluster.peer_queue_bytes;
            match admit(queued, size, limit, msg.qos, peer.up) {
                Admit::Send => {}
                Admit::SendCongested => self.hub.congested.store(true, Ordering::Relaxed),
                Admit::Drop => {
                    add(&self.metrics.cluster_drops, 1);
                    if msg.qos != QoS::AtMostOnce {
                        tracing::warn!(peer = %name, queued, "cluster: peer unreachable and its queue full; a QoS 1/2 message for it dropped");
                    }
                    continue;
                }
            }
            add(&self.metrics.cluster_forwarded, 1);
            let _ = peer.tx.send(Frame::Publish {
                seq: 0,
                route,
                groups: picked,
                msg: msg.clone(),
            });
        }
    }

    fn send(&self, node: &str, f: Frame) {
        if let Some(p) = self.peers.get(node) {
            let _ = p.tx.send(f);
        }
    }

    fn node_filter(&mut self, node: &str, filter: ByteString, add: bool) {
        let Some(&i) = self.node_index.get(node) else {
            return;
        };
        let set = self.node_filters.entry(node.to_string()).or_default();
        let changed = if add {
            set.insert(filter.clone())
        } else {
            set.remove(&filter)
        };
        if !changed {
            return;
        }
        if crate::protocol::topic::parse_shared(&filter).is_some() {
            // A group: every worker's view counts the node as one member of it.
            self.post_node_filter(i, filter, add);
            return;
        }
        if add {
            if self.trie.insert(&filter, i, ()).is_err() {
                tracing::warn!(%filter, "cluster: filter too deep, not routed");
                return;
            }
        } else {
            self.trie.remove(&filter, i);
        }
        if count_change(&mut self.filter_nodes, &filter, add) {
            self.post_node_filter(i, filter, add);
        }
    }

    /// `Mail::NodeFilter` to every worker.
    fn post_node_filter(&self, node: u16, filter: ByteString, add: bool) {
        for w in 0..self.shared.workers() as u16 {
            let filter = filter.clone();
            self.post(w, Mail::NodeFilter { node, filter, add });
        }
    }

    fn forget_node_filters(&mut self, node: &str) {
        let list: Vec<ByteString> = self
            .node_filters
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for f in list {
            self.node_filter(node, f, false);
        }
    }

    /// A message from another node: into the local retained store, to every worker with
    /// subscriptions (`route`), and to one member here of each shared subscription in
    /// `groups` (a worker picks it from its view; the workers take turns).
    fn deliver(&mut self, msg: Message, route: bool, groups: Vec<ByteString>) {
        add(&self.metrics.cluster_received, 1);
        if msg.retain && self.shared.cfg.retain_available {
            self.shared.store_retained(&msg);
        }
        for group in groups {
            self.serve_turn = (self.serve_turn + 1) % self.shared.workers();
            let msg = msg.clone();
            self.post(self.serve_turn as u16, Mail::ServeShared { group, msg });
        }
        if !route {
            return;
        }
        for w in 0..self.shared.workers() {
            if self.shared.sub_counts[w].load(Ordering::Relaxed) > 0 {
                self.post(w as u16, Mail::Publish(msg.clone()));
            }
        }
    }

    // --- events ----------------------------------------------------------------------------

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Registered { lease } => {
                let old = self.lease.replace(lease);
                tracing::info!(node = %self.name, lease, "cluster: registered in etcd");
                self.maybe_unfence();
                if let (Some(old), Some(c)) = (old, self.client.clone()) {
                    let mut c = c;
                    tokio::spawn(async move {
                        let _ = c.lease_revoke(old).await;
                    });
                }
            }
            Event::LeaseLost => self.fence(),
            Event::Restored { items, result } => self.on_restored(items, result),
            Event::Member { node, addr } => self.on_member(node, addr),
            Event::Claims { batch, result } => self.on_claims(batch, result),
            Event::Releases { keys, ok } => {
                self.txns_in_flight -= 1;
                if !ok {
                    add(&self.metrics.cluster_etcd_errors, 1);
                    tracing::debug!(
                        keys = keys.len(),
                        "cluster: release failed (the lease ends them)"
                    );
                }
            }
            Event::Frame {
                node,
                incarnation,
                frame,
            } => self.on_frame(node, incarnation, frame),
            Event::Link { node, up } => self.on_link(node, up),
        }
    }

    /// CONNECTs are taken once the node holds a lease and every session restored from the
    /// data dir is checked against etcd.
    fn maybe_unfence(&mut self) {
        if self.lease.is_some()
            && self.restore_reports == 0
            && self.restore_queue.is_empty()
            && self.restores_in_flight == 0
            && self.hub.fenced.swap(false, Ordering::AcqRel)
        {
            tracing::info!(node = %self.name, "cluster: serving");
        }
    }

    /// Check restored sessions against etcd, up to 128 in one transaction: each key is put
    /// under our lease if absent (or still holding our value from before the restart),
    /// else read.
    fn check_restored(&mut self, client: &Client, lease: i64) {
        if self.restore_reports > 0 {
            return;
        }
        while self.txns_in_flight < MAX_TXNS_IN_FLIGHT && !self.restore_queue.is_empty() {
            let n = self.restore_queue.len().min(MAX_TXN_OPS);
            let items: Vec<Restore> = self.restore_queue.drain(..n).collect();
            let ops: Vec<TxnOp> = items
                .iter()
                .map(|r| {
                    let key = client_key(&self.prefix, &r.client_id);
                    let v = claim_value(&self.name, lease as u64, r.epoch);
                    let when = match &r.expect {
                        None => Compare::version(key.clone(), CompareOp::Equal, 0),
                        Some(old) => Compare::value(key.clone(), CompareOp::Equal, old.clone()),
                    };
                    let put = PutOptions::new().with_lease(lease);
                    TxnOp::txn(
                        Txn::new()
                            .when([when])
                            .and_then([TxnOp::put(key.clone(), v, Some(put))])
                            .or_else([TxnOp::get(key, None)]),
                    )
                })
                .collect();
            self.restores_in_flight += 1;
            self.txn(client, ops, move |result| {
                let result = result.map(|ops| {
                    ops.into_iter()
                        .map(|op| match op {
                            TxnOpResponse::Txn(t) if t.succeeded() => Checked::Mine,
                            TxnOpResponse::Txn(t) => {
                                Checked::Holds(t.op_responses().into_iter().find_map(|o| match o {
                                    TxnOpResponse::Get(g) => {
                                        g.kvs().first().map(|kv| kv.value().to_vec())
                                    }
                                    _ => None,
                                }))
                            }
                            _ => Checked::Holds(None),
                        })
                        .collect()
                });
                Event::Restored { items, result }
            });
        }
    }

    fn on_restored(&mut self, items: Vec<Restore>, result: Result<Vec<Checked>, String>) {
        self.txns_in_flight -= 1;
        self.restores_in_flight -= 1;
        let checked = match result {
            Ok(v) if v.len() == items.len() => v,
            other => {
                add(&self.metrics.cluster_etcd_errors, 1);
                let e = other
                    .err()
                    .unwrap_or_else(|| "wrong number of answers".into());
                tracing::warn!(error = %e, "cluster: checking restored sessions in etcd failed; retrying");
                self.restore_queue.extend(items);
                return;
            }
        };
        for (mut r, c) in items.into_iter().zip(checked) {
            match c {
                Checked::Mine => {}
                // Another node's (or not a claim at all): this copy is stale.
                Checked::Holds(Some(v)) if claim_node(&v) != Some(&*self.name) => {
                    self.post(
                        r.worker,
                        Mail::DropStale {
                            client_id: r.client_id,
                            epoch: r.epoch,
                        },
                    );
                }
                // Gone meanwhile, or ours from before the restart: try again with it.
                Checked::Holds(v) => {
                    r.expect = v;
                    self.restore_queue.push(r);
                }
            }
        }
        self.maybe_unfence();
    }

    fn fence(&mut self) {
        if self.hub.fenced.swap(true, Ordering::AcqRel) {
            return;
        }
        add(&self.metrics.cluster_fences, 1);
        tracing::error!(node = %self.name, "cluster: lease lost; closing every connection and session held here (fenced) until registered again");
        self.lease = None;
        for w in 0..self.shared.workers() as u16 {
            self.post(w, Mail::Fence);
        }
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            self.answer(id, ClaimOutcome::Refused(ReasonCode::SERVER_UNAVAILABLE));
        }
        self.claim_queue.clear();
        self.release_queue.clear();
    }

    fn on_member(&mut self, node: String, addr: Option<SocketAddr>) {
        match addr {
            Some(addr) => {
                if let Some(p) = self.peers.get(&node) {
                    if !p.task.is_finished() {
                        return;
                    }
                }
                tracing::info!(peer = %node, %addr, "cluster: member");
                let next = self.node_index.len() as u16;
                self.node_index.entry(node.clone()).or_insert(next);
                let (tx, rx) = mpsc::unbounded_channel();
                let queued = Arc::new(AtomicUsize::new(0));
                // Each link task numbers its frames from 1, so each says a run of its own in
                // `Hello`: a task started after the peer left and came back (fenced, say, and
                // not restarted: it remembers our last run's numbers) is not taken for
                // duplicates of the previous one.
                self.links_started += 1;
                let task = tokio::spawn(link(
                    node.clone(),
                    addr,
                    self.name.clone(),
                    self.incarnation.wrapping_add(self.links_started),
                    rx,
                    queued.clone(),
                    self.tx.clone(),
                ));
                if let Some(old) = self.peers.insert(
                    node,
                    Peer {
                        tx,
                        queued,
                        up: false,
                        task,
                    },
                ) {
                    old.task.abort();
                }
            }
            None => {
                tracing::info!(peer = %node, "cluster: member left");
                if let Some(p) = self.peers.remove(&node) {
                    p.task.abort();
                    if p.up {
                        self.metrics
                            .cluster_peers_linked
                            .fetch_sub(1, Ordering::Relaxed);
                    }
                }
                self.forget_node_filters(&node);
                // Sessions handed to it that it never said it stored: our copies stay (and
                // come back at our restart if nobody else holds the id).
                self.awaiting_stored.retain(|(n, _), _| *n != node);
                // Claims waiting for its hand-off: its sessions went with it.
                let waiting: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.remote.as_ref().is_some_and(|(n, _)| *n == node))
                    .map(|(&id, _)| id)
                    .collect();
                for id in waiting {
                    self.answer(id, ClaimOutcome::Owned);
                }
            }
        }
    }

    fn on_link(&mut self, node: String, up: bool) {
        let Some(p) = self.peers.get_mut(&node) else {
            return;
        };
        if p.up == up {
            return;
        }
        p.up = up;
        if !up {
            self.metrics
                .cluster_peers_linked
                .fetch_sub(1, Ordering::Relaxed);
            tracing::info!(peer = %node, "cluster: peer link down");
            return;
        }
        self.metrics
            .cluster_peers_linked
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %node, "cluster: peer link up");
        // The state the peer needs in full: our filters and our retained messages.
        let filters: Vec<ByteString> = self.local_filters.keys().cloned().collect();
        self.send(&node, Frame::Filters(filters));
        let mut retained = Vec::new();
        self.shared
            .retained
            .lock()
            .matching("#", |m| retained.push(m.clone()));
        for m in retained {
            self.send(&node, Frame::Retained(m));
        }
    }

    fn on_frame(&mut self, node: String, incarnation: u64, frame: Frame) {
        if let Some(seq) = frame.seq() {
            let e = self.seen.entry(node.clone()).or_insert((incarnation, 0));
            if e.0 != incarnation {
                *e = (incarnation, 0);
            }
            if seq <= e.1 {
                return; // sent again after a reconnect, handled before
            }
            e.1 = seq;
        }
        if !self.node_index.contains_key(&node) {
            // Not (yet) a member we know: count it in, so its filters are kept.
            let next = self.node_index.len() as u16;
            self.node_index.insert(node.clone(), next);
        }
        match frame {
            Frame::Filters(list) => {
                let new: HashSet<ByteString> = list.into_iter().collect();
                let old: Vec<ByteString> = self
                    .node_filters
                    .get(&node)
                    .map(|s| s.iter().filter(|f| !new.contains(*f)).cloned().collect())
                    .unwrap_or_default();
                for f in old {
                    self.node_filter(&node, f, false);
                }
                for f in new {
                    self.node_filter(&node, f, true);
                }
            }
            Frame::Filter { filter, add } => self.node_filter(&node, filter, add),
            Frame::Publish {
                msg, route, groups, ..
            } => self.deliver(msg, route, groups),
            Frame::Retained(msg) => {
                if self.shared.cfg.retain_available {
                    let mut store = self.shared.retained.lock();
                    if store.get(&msg.topic).is_none() {
                        let topic = msg.topic.clone();
                        let _ = store.set(&topic, msg);
                    }
                }
            }
            f @ Frame::TakeOver { .. } => self.serve_takeover(node, f),
            Frame::Handoff { token, outcome, .. } => self.on_remote_handoff(node, token, outcome),
            Frame::Stored { token, .. } => {
                if let Some((w, client_id, epoch)) = self.awaiting_stored.remove(&(node, token)) {
                    self.post(w, Mail::Stored { client_id, epoch });
                }
            }
            Frame::Hello { .. } | Frame::Ack { .. } | Frame::Ping => {}
        }
    }
}

/// What to do with a message for a peer whose queue (sent, not yet acknowledged) holds
/// `queued` bytes, under the limit `peer_queue_bytes`.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Send,
    /// Send, and pause the publishers (`Hub::congested`): back-pressure, not loss.
    SendCongested,
    Drop,
}

/// Under the limit everything goes. Beyond it QoS 0 is dropped (it may be dropped on
/// congestion anywhere on its way); QoS 1/2 for a linked peer is queued and the publishers
/// are paused, so the queue passes the limit only by what they had sent already; for a peer
/// that is not linked (dead, or cut off, until etcd drops it or the link heals) QoS 1/2 is
/// kept up to 4 times the limit and dropped beyond, so one lost node stalls no publisher.
fn admit(queued: usize, size: usize, limit: usize, qos: QoS, up: bool) -> Admit {
    if queued + size <= limit {
        Admit::Send
    } else if qos == QoS::AtMostOnce {
        Admit::Drop
    } else if up {
        Admit::SendCongested
    } else if queued + size <= limit.saturating_mul(4) {
        Admit::Send
    } else {
        Admit::Drop
    }
}

/// Count one more (`add`) or one fewer of `key`, dropping it at zero; true when the count
/// went from 0 to 1 or from 1 to 0 (what the other side of a view must hear of).
fn count_change(counts: &mut HashMap<ByteString, u32>, key: &ByteString, add: bool) -> bool {
    if add {
        let n = counts.entry(key.clone()).or_insert(0);
        *n += 1;
        *n == 1
    } else {
        match counts.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                counts.remove(key);
                true
            }
            None => false,
        }
    }
}

// --- I/O tasks -------------------------------------------------------------------------------

async fn connect_etcd(endpoints: &[String]) -> Client {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        match Client::connect(endpoints, Some(opts)).await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: etcd not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Hold a lease with the member key under it; report `LeaseLost` once it could not be renewed
/// for three quarters of its time (before etcd lets it expire: the node fences itself first),
/// then grant a new one.
async fn keep_lease(
    mut c: Client,
    tx: mpsc::UnboundedSender<Event>,
    key: String,
    addr: String,
    ttl: u64,
) {
    let fence_after = Duration::from_millis(ttl * 750);
    let every = Duration::from_millis((ttl * 1000 / 4).max(200));
    loop {
        let lease = loop {
            let r = async {
                let g = c.lease_grant(ttl as i64, None).await?;
                let opts = PutOptions::new().with_lease(g.id());
                c.put(key.clone(), addr.clone(), Some(opts)).await?;
                Ok::<i64, etcd_client::Error>(g.id())
            };
            match tokio::time::timeout(Duration::from_secs(5), r).await {
                Ok(Ok(id)) => break id,
                Ok(Err(e)) => tracing::warn!(error = %e, "cluster: cannot register in etcd"),
                Err(_) => tracing::warn!("cluster: registering in etcd timed out"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let mut last_ok = Instant::now();
        if tx.send(Event::Registered { lease }).is_err() {
            return;
        }
        let mut keeper = None;
        loop {
            tokio::time::sleep(every).await;
            if last_ok.elapsed() > fence_after {
                break;
            }
            if keeper.is_none() {
                if let Ok(Ok(k)) =
                    tokio::time::timeout(Duration::from_secs(1), c.lease_keep_alive(lease)).await
                {
                    keeper = Some(k);
                }
            }
            let Some((k, stream)) = keeper.as_mut() else {
                continue;
            };
            let r = tokio::time::timeout(Duration::from_secs(1), async {
                k.keep_alive().await?;
                stream.message().await
            })
            .await;
            match r {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => break, // the lease is gone in etcd
                _ => keeper = None,
            }
        }
        if tx.send(Event::LeaseLost).is_err() {
            return;
        }
    }
}

/// The members under `prefix` (other than `me`): the current list, then every change.
async fn watch_members(
    mut c: Client,
    tx: mpsc::UnboundedSender<Event>,
    prefix: String,
    me: String,
) {
    let name_of = |k: &[u8]| {
        std::str::from_utf8(k)
            .ok()
            .and_then(|k| k.strip_prefix(prefix.as_str()))
            .map(str::to_string)
    };
    let mut known: HashSet<String> = HashSet::new();
    loop {
        let r = c
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await;
        let resp = match r {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let rev = resp.header().map_or(0, |h| h.revision());
        let mut now: HashSet<String> = HashSet::new();
        for kv in resp.kvs() {
            let (Some(n), Ok(v)) = (name_of(kv.key()), kv.value_str()) else {
                continue;
            };
            if n == me {
                continue;
            }
            if let Ok(addr) = v.parse() {
                now.insert(n.clone());
                let _ = tx.send(Event::Member {
                    node: n,
                    addr: Some(addr),
                });
            }
        }
        for gone in known.difference(&now) {
            let _ = tx.send(Event::Member {
                node: gone.clone(),
                addr: None,
            });
        }
        known = now;
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        let mut stream = match c.watch(prefix.clone(), Some(opts)).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Ok(Some(resp)) = stream.message().await {
            if resp.canceled() {
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Some(n) = name_of(kv.key()) else { continue };
                if n == me {
                    continue;
                }
                match ev.event_type() {
                    EventType::Put => {
                        if let Ok(addr) = kv.value_str().unwrap_or("").parse() {
                            known.insert(n.clone());
                            let _ = tx.send(Event::Member {
                                node: n,
                                addr: Some(addr),
                            });
                        }
                    }
                    EventType::Delete => {
                        known.remove(&n);
                        let _ = tx.send(Event::Member {
                            node: n,
                            addr: None,
                        });
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Event>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                tokio::spawn(read_link(s, tx.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster: accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// An incoming link: frames to the node task, a cumulative `Ack` back after each read that
/// brought a sequenced frame or a `Ping`. Silent for [`LINK_TIMEOUT`]: closed (the peer pings
/// every [`HEARTBEAT`], so silence means the link or the peer is gone).
async fn read_link(mut s: tokio::net::TcpStream, tx: mpsc::UnboundedSender<Event>) {
    let mut buf = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    let mut from: Option<(String, u64)> = None;
    let mut last_seq = 0u64;
    loop {
        let n = match tokio::time::timeout(LINK_TIMEOUT, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => {
                tracing::info!(peer = ?from.as_ref().map(|f| &f.0), "cluster: incoming peer link silent; closed");
                return;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        let mut answer = false;
        loop {
            match wire::decode(&buf[at..]) {
                Ok(Some((f, used))) => {
                    at += used;
                    if let Frame::Hello { node, incarnation } = &f {
                        from = Some((node.clone(), *incarnation));
                        continue;
                    }
                    if matches!(f, Frame::Ping) {
                        answer = true;
                        continue;
                    }
                    let Some((node, incarnation)) = from.clone() else {
                        return; // no Hello first: not a peer
                    };
                    if let Some(seq) = f.seq() {
                        last_seq = seq;
                        answer = true;
                    }
                    if tx
                        .send(Event::Frame {
                            node,
                            incarnation,
                            frame: f,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!("cluster: bad frame from a peer; link closed");
                    return;
                }
            }
        }
        buf.drain(..at);
        if answer {
            let mut out = Vec::new();
            wire::encode(&Frame::Ack { seq: last_seq }, &mut out);
            if !write_within(&mut s, &out).await {
                return;
            }
        }
    }
}

/// Write all of `buf` within [`LINK_TIMEOUT`]; false when the link failed or stalled.
async fn write_within<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(LINK_TIMEOUT, w.write_all(buf)).await,
        Ok(Ok(()))
    )
}

/// The outgoing link to one peer: connect (with backoff), say `Hello`, send again what was
/// not acknowledged, then send frames as they come and drop what the peer acknowledges.
async fn link(
    node: String,
    addr: SocketAddr,
    me: String,
    incarnation: u64,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    queued: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut next_seq = 1u64;
    // (seq, encoded frame) not acknowledged yet.
    let mut unacked: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        let s = match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => {
                // Frames keep arriving meanwhile: number and keep the sequenced ones.
                let deadline = tokio::time::sleep(backoff);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        f = rx.recv() => match f {
                            Some(f) => take_frame(f, &mut next_seq, &mut unacked, &queued, None),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let _ = s.set_nodelay(true);
        let (mut r, mut w) = s.into_split();
        let mut out = Vec::new();
        wire::encode(
            &Frame::Hello {
                node: me.clone(),
                incarnation,
            },
            &mut out,
        );
        for (_, b) in &unacked {
            out.extend_from_slice(b);
        }
        if !write_within(&mut w, &out).await {
            continue;
        }
        let _ = tx.send(Event::Link {
            node: node.clone(),
            up: true,
        });
        let mut rbuf = Vec::new();
        let mut chunk = vec![0u8; 4096];
        let (mut last_read, mut last_write) = (Instant::now(), Instant::now());
        let mut beat = tokio::time::interval(HEARTBEAT / 4);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let broken = loop {
            tokio::select! {
                f = rx.recv() => {
                    let Some(f) = f else { return };
                    out.clear();
                    take_frame(f, &mut next_seq, &mut unacked, &queued, Some(&mut out));
                    // What else is ready goes into the same write.
                    while out.len() < 1 << 20 {
                        let Ok(f) = rx.try_recv() else { break };
                        take_frame(f, &mut next_seq, &mut unacked, &queued, Some(&mut out));
                    }
                    if !write_within(&mut w, &out).await {
                        break true;
                    }
                    last_write = Instant::now();
                }
                n = r.read(&mut chunk) => {
                    let n = match n { Ok(0) | Err(_) => break true, Ok(n) => n };
                    last_read = Instant::now();
                    rbuf.extend_from_slice(&chunk[..n]);
                    let mut at = 0;
                    while let Ok(Some((f, used))) = wire::decode(&rbuf[at..]) {
                        at += used;
                        if let Frame::Ack { seq } = f {
                            while unacked.front().is_some_and(|(s, _)| *s <= seq) {
                                let (_, b) = unacked.pop_front().expect("front exists");
                                queued.fetch_sub(b.len(), Ordering::Relaxed);
                            }
                        }
                    }
                    rbuf.drain(..at);
                }
                _ = beat.tick() => {
                    if last_read.elapsed() > LINK_TIMEOUT {
                        tracing::warn!(peer = %node, "cluster: nothing heard on the peer link for {LINK_TIMEOUT:?}; reconnecting");
                        break true;
                    }
                    if last_write.elapsed() >= HEARTBEAT {
                        out.clear();
                        wire::encode(&Frame::Ping, &mut out);
                        if !write_within(&mut w, &out).await {
                            break true;
                        }
                        last_write = Instant::now();
                    }
                }
            }
        };
        if broken {
            let _ = tx.send(Event::Link {
                node: node.clone(),
                up: false,
            });
        }
    }
}

/// Encode `f` into `out`; a sequenced frame is numbered first and kept until acknowledged.
/// While the link is down (`out` None) only sequenced frames are kept: state frames are sent
/// again in full when it comes back.
fn take_frame(
    mut f: Frame,
    next_seq: &mut u64,
    unacked: &mut VecDeque<(u64, Vec<u8>)>,
    queued: &AtomicUsize,
    out: Option<&mut Vec<u8>>,
) {
    let seq = *next_seq;
    let Some(s) = f.seq_mut() else {
        if let Some(out) = out {
            wire::encode(&f, out);
        }
        return;
    };
    *s = seq;
    *next_seq += 1;
    let mut b = Vec::new();
    wire::encode(&f, &mut b);
    if let Some(out) = out {
        out.extend_from_slice(&b);
    }
    queued.fetch_add(b.len(), Ordering::Relaxed);
    unacked.push_back((seq, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_peer_queue_drops_qos0_and_pushes_back_on_qos1_while_linked() {
        use crate::protocol::QoS::*;
        assert_eq!(admit(0, 100, 1000, AtMostOnce, true), Admit::Send);
        assert_eq!(admit(900, 100, 1000, AtLeastOnce, true), Admit::Send);
        assert_eq!(admit(950, 100, 1000, AtMostOnce, true), Admit::Drop);
        assert_eq!(
            admit(950, 100, 1000, AtLeastOnce, true),
            Admit::SendCongested
        );
        assert_eq!(
            admit(50_000, 100, 1000, ExactlyOnce, true),
            Admit::SendCongested
        );
        // Not linked: kept up to 4x the limit, then dropped; never congests.
        assert_eq!(admit(2000, 100, 1000, AtLeastOnce, false), Admit::Send);
        assert_eq!(admit(3950, 100, 1000, ExactlyOnce, false), Admit::Drop);
    }

    #[test]
    fn counted_changes_report_only_the_first_and_the_last() {
        let mut m = HashMap::new();
        let k = ByteString::from("a/#");
        assert!(count_change(&mut m, &k, true), "first");
        assert!(!count_change(&mut m, &k, true));
        assert!(!count_change(&mut m, &k, false));
        assert!(count_change(&mut m, &k, false), "last");
        assert!(m.is_empty());
        // A removal of what is not counted changes nothing.
        assert!(!count_change(&mut m, &k, false));
        assert!(m.is_empty());
    }

    #[test]
    fn a_frame_is_kept_until_acknowledged_only_if_sequenced() {
        let (mut next, mut unacked, queued) = (1u64, VecDeque::new(), AtomicUsize::new(0));
        let mut out = Vec::new();
        take_frame(
            Frame::Ack { seq: 9 },
            &mut next,
            &mut unacked,
            &queued,
            Some(&mut out),
        );
        assert!(unacked.is_empty() && !out.is_empty() && next == 1);
        take_frame(
            Frame::Handoff {
                seq: 0,
                token: 1,
                outcome: Outcome::None,
            },
            &mut next,
            &mut unacked,
            &queued,
            None,
        );
        assert_eq!((next, unacked.len()), (2, 1));
        assert_eq!(queued.load(Ordering::Relaxed), unacked[0].1.len());
        match wire::decode(&unacked[0].1).unwrap() {
            Some((f, _)) => assert_eq!(f.seq(), Some(1)),
            None => panic!("incomplete"),
        }
    }
}
