//! The broker: N workers, each an io_uring engine driving a [`worker::Worker`] shell around
//! a sans-IO [`Core`].
//!
//! | file | answers |
//! |---|---|
//! | `core.rs` | the per-worker broker core: inputs, effects, the end of a connection, timers |
//! | `takeover.rs` | who owns a ClientId; take-over, hand-off and cut-over between workers |
//! | `router.rs` | which sessions a PUBLISH reaches; subscriptions; retained on subscribe |
//! | `overflow.rs` | what happens to a message a client cannot take now; every drop, counted and logged |
//! | `auth.rs` | CONNECT authentication and the verification threads |
//! | `mail.rs` | the messages between workers and threads |
//! | `shared.rs` | what all workers share, and why |
//! | `worker.rs` | the io_uring shell (and the PROXY, TLS and WebSocket layers) around one core |

mod auth;
mod cluster;
mod core;
pub(crate) mod mail;
mod overflow;
mod persist;
mod router;
mod shared;
mod takeover;
#[cfg(test)]
mod tests;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

use crate::config::Config;
use crate::metrics::WorkerMetrics;
use crate::runtime::engine::{Engine, EngineConfig, Remote};

pub use self::core::{Core, Effect, Input};
pub use mail::Mail;
pub use shared::Shared;
pub use worker::slot_bytes_per_connection;

/// A running broker.
pub struct BrokerHandle {
    shared: Arc<Shared>,
    /// The data dir's lock (held while the broker runs).
    _data_lock: Option<std::fs::File>,
    threads: Vec<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    wss_addrs: Vec<SocketAddr>,
    worker_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl BrokerHandle {
    /// The bound listen addresses (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
    /// The bound TLS listen addresses (port 0 resolved).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }
    /// The bound WebSocket listen addresses (port 0 resolved).
    pub fn ws_addrs(&self) -> &[SocketAddr] {
        &self.ws_addrs
    }
    /// The bound WebSocket-over-TLS listen addresses (port 0 resolved).
    pub fn wss_addrs(&self) -> &[SocketAddr] {
        &self.wss_addrs
    }
    /// With `worker_port_base`: the address that lands on worker i.
    pub fn worker_addrs(&self) -> &[SocketAddr] {
        &self.worker_addrs
    }
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
    pub fn metrics(&self) -> Vec<(&'static str, u64)> {
        WorkerMetrics::FIELDS
            .iter()
            .map(|f| f.0)
            .zip(crate::metrics::totals(&self.shared.metrics))
            .collect()
    }
    /// Ask every worker to stop: MQTT 5 clients get DISCONNECT 0x8B, wills are published.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(hub) = &self.shared.cluster {
            hub.wake();
        }
        if let Some(r) = self.shared.remotes.get() {
            for remote in r {
                remote.wake();
            }
        }
    }
    /// Read the password and ACL files again (what SIGHUP does). On an error nothing changes
    /// and the error says which file and line. Connections are rebound to the new ACL by
    /// their worker before it handles its next input.
    pub fn reload_auth(&self) -> Result<(), String> {
        self.shared.auth.reload(&self.shared.cfg)?;
        if let Some(r) = self.shared.remotes.get() {
            for remote in r {
                remote.wake();
            }
        }
        Ok(())
    }
    /// Wait for every worker to end.
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

/// The host name (a cluster node's default name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ringmq".into())
}

/// Recover the data dir into the cores, write each worker's first snapshot, delete what it
/// replaces, and start the storage threads.
fn open_storage(
    dir: &std::path::Path,
    shared: &Arc<Shared>,
    cores: &mut [Option<Core>],
    now: std::time::Instant,
) -> std::io::Result<(Vec<Option<crate::storage::log::Log>>, std::fs::File)> {
    use crate::storage::{log, recover};
    use std::os::fd::AsRawFd;
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let n = cores.len();
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(invalid(format!(
            "{}: the data dir is in use by another broker",
            dir.display()
        )));
    }
    let t0 = std::time::Instant::now();
    let cfg = &shared.cfg;
    let mut rec = recover::recover(dir, n, cfg.recover_truncate, now).map_err(invalid)?;
    let read_ms = t0.elapsed().as_millis() as u64;
    shared.owners.seed_epoch(rec.max_epoch + 1);
    {
        let mut store = shared.retained.lock();
        for m in rec.retained.drain(..) {
            let topic = m.topic.clone();
            let _ = store.set(&topic, m);
        }
    }
    shared
        .retain_version
        .store(rec.retain_version, Ordering::Relaxed);
    let interval = std::time::Duration::from_secs(cfg.snapshot_interval_secs);
    let mut logs = Vec::with_capacity(n);
    let mut sessions = 0;
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut restored_all = std::mem::take(&mut rec.sessions);
    for (w, core) in cores.iter_mut().enumerate() {
        let core = core.as_mut().expect("cores are built");
        let wdir = log::worker_dir(dir, w);
        std::fs::create_dir_all(&wdir)?;
        let shared2 = shared.clone();
        let notify: log::Notify = Box::new(move || {
            if let Some(r) = shared2.remotes.get() {
                r[w].wake();
            }
        });
        let l = log::Log::start(
            wdir,
            rec.next_seq,
            cfg.durability,
            std::time::Duration::from_millis(cfg.commit_interval_ms),
            shared.metrics[w].clone(),
            notify,
            failed.clone(),
        )?;
        core.enable_persist(cfg.durability, interval, l.failed_flag(), now);
        sessions += restored_all[w].len();
        logs.push(Some(l));
    }
    shared.owners.reserve(sessions);
    // Each core restores its sessions on a thread of its own.
    std::thread::scope(|sc| {
        for (core, restored) in cores.iter_mut().zip(restored_all.iter_mut()) {
            let core = core.as_mut().expect("cores are built");
            let restored = std::mem::take(restored);
            sc.spawn(move || core.restore(restored));
        }
    });
    let sessions_ms = t0.elapsed().as_millis() as u64 - read_ms;
    // The other workers' views of each worker's restored filters (PUBACK 0x10), in one go.
    let filters: Vec<crate::routing::remote::RestoredFilters> = cores
        .iter_mut()
        .map(|c| {
            c.as_mut()
                .map(|c| c.take_restored_filters())
                .unwrap_or_default()
        })
        .collect();
    std::thread::scope(|sc| {
        for (v, core) in cores.iter_mut().enumerate() {
            let core = core.as_mut().expect("cores are built");
            let filters = &filters;
            sc.spawn(move || {
                for (w, list) in filters.iter().enumerate() {
                    if w != v {
                        core.apply_restored_filters(w as u16, list);
                    }
                }
            });
        }
    });
    drop(filters);
    if let Some(c) = cores[0].as_mut() {
        c.publish_recovered_wills(std::mem::take(&mut rec.wills), now);
    }
    let fanouts_resumed: usize = rec.fanouts.iter().map(Vec::len).sum::<usize>()
        + rec.fanout_picks.iter().map(Vec::len).sum::<usize>();
    let picks = std::mem::take(&mut rec.fanout_picks);
    for ((core, msgs), picks) in cores
        .iter_mut()
        .zip(std::mem::take(&mut rec.fanouts))
        .zip(picks)
    {
        if let Some(c) = core.as_mut() {
            c.route_recovered(msgs, picks, now);
        }
    }
    let restore_ms = t0.elapsed().as_millis() as u64 - read_ms;
    let views_ms = restore_ms - sessions_ms;
    // Each worker's first snapshot holds what it restored; then the old files can go. A
    // worker whose directory already holds exactly that (`Recovered::exact`) and whose
    // restoring logged nothing keeps its snapshot: its log goes on after it.
    let seq = rec.next_seq;
    let exact = &rec.exact;
    let written: Vec<std::io::Result<Option<u64>>> = std::thread::scope(|sc| {
        let hs: Vec<_> = cores
            .iter_mut()
            .enumerate()
            .map(|(w, core)| {
                let core = core.as_mut().expect("cores are built");
                sc.spawn(move || {
                    // What restoring logged (wills routed to offline sessions) is in the
                    // snapshot.
                    let mut buf = Vec::new();
                    match core.take_log(&mut buf) {
                        Some(batch) => core.handle(Input::Committed(batch), now),
                        None => {
                            if let Some(kept) = exact[w] {
                                return Ok(Some(kept));
                            }
                        }
                    }
                    let snap = core.snapshot(now);
                    log::write_snapshot(&log::worker_dir(dir, w), seq, &snap).map(|()| None)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("snapshot thread")))
            })
            .collect()
    });
    let mut kept = vec![None; n];
    for (w, r) in written.into_iter().enumerate() {
        kept[w] = r?;
    }
    for (w, wdir) in recover::worker_dirs(dir)? {
        if w < n {
            log::remove_older(&wdir, kept[w].unwrap_or(rec.next_seq));
        } else {
            std::fs::remove_dir_all(&wdir)?;
        }
    }
    log::fsync_dir(dir)?;
    let m = &shared.metrics[0];
    m.recovery_micros
        .store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    m.recovery_records.store(rec.records, Ordering::Relaxed);
    let millis = t0.elapsed().as_millis() as u64;
    let snapshot_ms = millis - read_ms - restore_ms;
    let snapshots_kept = kept.iter().filter(|k| k.is_some()).count();
    tracing::info!(dir = %dir.display(), sessions, retained = shared.retained.lock().len(),
        records = rec.records, torn_bytes = rec.torn_bytes, fanouts_resumed, read_ms, restore_ms, sessions_ms,
        views_ms, snapshot_ms, snapshots_kept, millis, durability = ?cfg.durability,
        "data dir recovered");
    Ok((logs, lock))
}

fn make_listener(addr: SocketAddr, cfg: &Config, reuse_port: bool) -> std::io::Result<TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Accepted sockets inherit these from the listener on Linux.
    s.set_nodelay(true)?;
    if let Some(k) = cfg.tcp_keepalive {
        let ka = TcpKeepalive::new()
            .with_time(std::time::Duration::from_secs(k.idle_secs.into()))
            .with_interval(std::time::Duration::from_secs(k.interval_secs.into()))
            .with_retries(k.count);
        s.set_tcp_keepalive(&ka)?;
    }
    if let Some(ms) = cfg.tcp_user_timeout_ms {
        s.set_tcp_user_timeout(Some(std::time::Duration::from_millis(ms.into())))?;
    }
    s.bind(&addr.into())?;
    s.listen(cfg.backlog)?;
    Ok(s.into())
}

/// Bind `addrs` once per worker (SO_REUSEPORT; port 0 is resolved by the first bind), each
/// with the layers `kind`, and a PROXY header first where `proxy_protocol_listeners` names
/// the address (as configured). Returns the bound addresses.
fn bind_all(
    per_worker: &mut [Vec<TcpListener>],
    layers: &mut Vec<worker::Layers>,
    cfg: &Config,
    addrs: &[SocketAddr],
    kind: &worker::Layers,
) -> std::io::Result<Vec<SocketAddr>> {
    let mut bound_addrs = Vec::new();
    for &addr in addrs {
        let mut bound = addr;
        for (w, slot) in per_worker.iter_mut().enumerate() {
            let l = make_listener(bound, cfg, true)?;
            if w == 0 {
                bound = l.local_addr()?;
                bound_addrs.push(bound);
            }
            slot.push(l);
        }
        layers.push(worker::Layers {
            proxy: cfg.proxy_protocol_listeners.contains(&addr),
            ..kind.clone()
        });
    }
    Ok(bound_addrs)
}

/// Start the broker: bind every listener, spawn the workers, return once all are running.
/// The listeners of every worker, bound and listening.
struct Bound {
    per_worker: Vec<Vec<TcpListener>>,
    layers: Vec<worker::Layers>,
    addrs: Vec<SocketAddr>,
    worker_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    wss_addrs: Vec<SocketAddr>,
}

fn bind_listeners(cfg: &Config, n: usize) -> std::io::Result<Bound> {
    // One SO_REUSEPORT listener per worker per address; `layers` gets each engine listener's
    // layers, in `Engine::listen` order (the same on every worker).
    let mut per_worker: Vec<Vec<TcpListener>> = (0..n).map(|_| Vec::new()).collect();
    let mut layers: Vec<worker::Layers> = Vec::new();
    let addrs = bind_all(
        &mut per_worker,
        &mut layers,
        cfg,
        &cfg.listen,
        &worker::Layers::default(),
    )?;
    let mut worker_addrs = Vec::new();
    if let Some(base) = cfg.worker_port_base {
        let ip = cfg.listen[0].ip();
        for (w, slot) in per_worker.iter_mut().enumerate() {
            let port = if base == 0 { 0 } else { base + w as u16 };
            let l = make_listener(SocketAddr::new(ip, port), cfg, false)?;
            worker_addrs.push(l.local_addr()?);
            slot.push(l);
        }
        layers.push(worker::Layers::default());
    }
    let tls_setup = if cfg.tls_listen.is_empty() && cfg.wss_listen.is_empty() {
        None
    } else {
        Some(Arc::new(crate::tls::TlsSetup::from_config(cfg).map_err(
            |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        )?))
    };
    let ws_config = Arc::new(crate::ws::WsConfig {
        path: cfg.ws_path.clone(),
        ..crate::ws::WsConfig::new(cfg.max_packet_size)
    });
    let tls_addrs = bind_all(
        &mut per_worker,
        &mut layers,
        cfg,
        &cfg.tls_listen,
        &worker::Layers {
            tls: tls_setup.clone(),
            ..Default::default()
        },
    )?;
    let ws_addrs = bind_all(
        &mut per_worker,
        &mut layers,
        cfg,
        &cfg.ws_listen,
        &worker::Layers {
            ws: Some(ws_config.clone()),
            ..Default::default()
        },
    )?;
    let wss_addrs = bind_all(
        &mut per_worker,
        &mut layers,
        cfg,
        &cfg.wss_listen,
        &worker::Layers {
            tls: tls_setup,
            ws: Some(ws_config),
            ..Default::default()
        },
    )?;

    Ok(Bound {
        per_worker,
        layers,
        addrs,
        worker_addrs,
        tls_addrs,
        ws_addrs,
        wss_addrs,
    })
}

pub fn start(mut cfg: Config) -> std::io::Result<BrokerHandle> {
    if cfg.cluster.enabled() && cfg.cluster.node_name.is_none() {
        cfg.cluster.node_name = Some(host_name());
    }
    cfg.validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let n = cfg.worker_count();
    if n > u16::MAX as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "too many workers",
        ));
    }

    let auth_state = crate::auth::Auth::from_config(&cfg)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (auth_jobs, auth_rx) = if auth_state.has_passwords() {
        let (tx, rx) = auth::verify_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let shared = Arc::new(Shared::new(cfg, n, auth_state, auth_jobs));
    let metrics = shared.metrics.clone();
    if let Some(rx) = auth_rx {
        auth::spawn_verifiers(shared.cfg.auth_threads, Arc::downgrade(&shared), rx)?;
    }

    let metrics_addr = match shared.cfg.metrics_listen {
        Some(a) => Some(crate::metrics::serve_prometheus(a, metrics.clone())?),
        None => None,
    };

    let engine_cfg = EngineConfig {
        ring_entries: 4096,
        buf_count: shared.cfg.recv_buffers,
        buf_size: shared.cfg.recv_buffer_size,
        max_conns: shared.cfg.max_connections_per_worker,
        send_queue_limit: shared.cfg.send_queue_limit,
        tick: std::time::Duration::from_millis(50),
        batch_wait_us: shared.cfg.batch_wait_us,
        batch_want: 32,
        // Per-address failed-login limits need the peer address.
        peer_addrs: shared.auth.has_passwords() && shared.cfg.auth_fail_burst > 0,
    };

    let now = std::time::Instant::now();
    let mut cores: Vec<Option<Core>> = (0..n)
        .map(|w| Some(Core::new(w as u16, shared.clone(), now)))
        .collect();
    let (logs, data_lock) = match &shared.cfg.data_dir {
        Some(dir) => {
            let (logs, lock) = open_storage(dir, &shared, &mut cores, now)?;
            (logs, Some(lock))
        }
        None => ((0..n).map(|_| None).collect(), None),
    };
    let mut logs = logs;
    // Listening only once the data dir is restored: a client that connects is served with
    // its session, and a health check does not see the port before the broker is ready.
    let Bound {
        per_worker,
        layers,
        addrs,
        worker_addrs,
        tls_addrs,
        ws_addrs,
        wss_addrs,
    } = match bind_listeners(&shared.cfg, n) {
        Ok(b) => b,
        Err(e) => {
            for l in logs.iter().flatten() {
                l.stop();
            }
            return Err(e);
        }
    };
    let layers = Arc::new(layers);

    let (tx, rx) = std::sync::mpsc::channel::<(usize, std::io::Result<Remote>)>();
    let barrier = Arc::new(Barrier::new(n + 1));
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let mut threads = Vec::new();
    for (w, listeners) in per_worker.into_iter().enumerate() {
        let shared = shared.clone();
        let tx = tx.clone();
        let barrier = barrier.clone();
        let engine_cfg = engine_cfg.clone();
        let layers = layers.clone();
        let core = if shared.cfg.pin_workers && !cpus.is_empty() {
            Some(cpus[w % cpus.len()])
        } else {
            None
        };
        let broker_core = cores[w].take().expect("one core per worker");
        let log = logs[w].take();
        let t = std::thread::Builder::new()
            .name(format!("ringmq-w{w}"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let mut engine = match Engine::new(engine_cfg) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send((w, Err(e)));
                        barrier.wait();
                        return;
                    }
                };
                for l in listeners {
                    if let Err(e) = engine.listen(l) {
                        let _ = tx.send((w, Err(e)));
                        barrier.wait();
                        return;
                    }
                }
                let _ = tx.send((w, Ok(engine.remote())));
                drop(tx);
                barrier.wait();
                if shared.remotes.get().is_none() {
                    return; // start failed on another worker
                }
                let mut worker = worker::Worker::new(broker_core, shared, layers, log);
                if let Err(e) = engine.run(&mut worker) {
                    tracing::error!(worker = w, error = %e, "worker loop failed");
                }
                worker.finish();
            })?;
        threads.push(t);
    }
    drop(tx);
    let mut remotes: Vec<Option<Remote>> = (0..n).map(|_| None).collect();
    let mut first_err = None;
    for (w, r) in rx.iter().take(n) {
        match r {
            Ok(r) => remotes[w] = Some(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if first_err.is_none() && remotes.iter().all(|r| r.is_some()) {
        let _ = shared.remotes.set(remotes.into_iter().flatten().collect());
    }
    barrier.wait();
    if let Some(e) = first_err {
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    let mut cluster_addr = None;
    if shared.cluster.is_some() {
        match crate::cluster::node::spawn(shared.clone()) {
            Ok((t, a)) => {
                threads.push(t);
                cluster_addr = Some(a);
            }
            Err(e) => {
                shared.shutdown.store(true, Ordering::SeqCst);
                for r in shared.remotes.get().into_iter().flatten() {
                    r.wake();
                }
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
    }
    tracing::info!(workers = n, listen = ?addrs, tls_listen = ?tls_addrs, ws_listen = ?ws_addrs,
        wss_listen = ?wss_addrs, cluster_listen = ?cluster_addr, "ringmq started");
    Ok(BrokerHandle {
        shared,
        _data_lock: data_lock,
        threads,
        addrs,
        tls_addrs,
        ws_addrs,
        wss_addrs,
        worker_addrs,
        metrics_addr,
    })
}
