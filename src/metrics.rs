//! Counters. Each worker owns one [`WorkerMetrics`] and is its only writer (relaxed atomics, no
//! contention); readers (the Prometheus endpoint, `$SYS` publication) sum over workers.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

macro_rules! counters {
    ($($name:ident : $kind:literal, $help:literal;)*) => {
        #[derive(Debug, Default)]
        pub struct WorkerMetrics { $(pub $name: AtomicU64,)* }

        impl WorkerMetrics {
            /// (name, prometheus type, help) for every counter, in declaration order.
            pub const FIELDS: &'static [(&'static str, &'static str, &'static str)] =
                &[$((stringify!($name), $kind, $help),)*];

            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name.load(Ordering::Relaxed),)*]
            }
        }
    };
}

counters! {
    connections_current: "gauge", "Live network connections";
    connections_total: "counter", "Connections accepted";
    connections_refused: "counter", "Connections refused at the connection limit";
    sessions_current: "gauge", "Sessions held (online and offline)";
    bytes_in: "counter", "Bytes received";
    bytes_out: "counter", "Bytes sent";
    packets_in: "counter", "Control packets received";
    packets_out: "counter", "Control packets sent";
    publish_in: "counter", "PUBLISH packets received";
    publish_out: "counter", "PUBLISH packets sent";
    keepalive_expired: "counter", "Connections closed by keep-alive expiry";
    connect_timeouts: "counter", "Sockets closed for not sending CONNECT in time";
    protocol_errors: "counter", "Connections closed for malformed packets or protocol errors";
    takeovers: "counter", "Connections taken over by a new CONNECT with the same ClientId";
    wills_published: "counter", "Will messages published";
    recv_enobufs: "counter", "Multishot recv ended because the provided-buffer ring was empty";
    accept_errors: "counter", "Accepts that failed in the kernel (the connection, if any, was closed)";
    io_rings: "gauge", "io_uring rings, each with its own fixed-file table (more open as connections outgrow RLIMIT_NOFILE per table)";
    slow_consumer_drops: "counter", "QoS 0 messages dropped for a connected client that did not read them fast enough (the sum of qos0_drops_queue_messages, qos0_drops_queue_bytes and qos0_drops_worker_bytes)";
    qos0_drops_queue_messages: "counter", "QoS 0 messages dropped because a client's QoS 0 queue held max_queued_qos0_messages (qos0_overflow says which)";
    qos0_drops_queue_bytes: "counter", "QoS 0 messages dropped because a client's QoS 0 queue held max_queued_qos0_bytes (qos0_overflow says which)";
    qos0_drops_worker_bytes: "counter", "QoS 0 messages dropped because the QoS 0 queues of the worker's clients held worker_qos0_queue_limit bytes";
    qos0_drops_offline: "counter", "QoS 0 messages not kept for a session without a connection (queue_qos0_offline = false), also those left in the QoS 0 queue of a client that disconnected";
    qos0_queued_total: "counter", "QoS 0 messages that waited in a client's QoS 0 queue because its socket was full";
    qos0_queued_messages: "gauge", "QoS 0 messages waiting in clients' QoS 0 queues for their sockets";
    qos0_queued_bytes: "gauge", "Bytes (topic and payload) waiting in clients' QoS 0 queues for their sockets";
    slow_consumer_disconnects: "counter", "Connections closed because a packet that cannot be dropped (an ack) found the socket queue full";
    queue_drops: "counter", "QoS 1/2 messages (and QoS 0 for offline sessions with queue_qos0_offline) dropped because a session queue held max_queued_messages or max_queued_bytes";
    expired_drops: "counter", "Messages dropped because their Message Expiry Interval passed before they were sent";
    too_large_drops: "counter", "Messages dropped because they exceed the client's Maximum Packet Size";
    mailbox_drops: "counter", "QoS 0 messages not handed to a worker whose mailbox was over its limit";
    publishers_paused: "counter", "Times reading from a publisher paused because its QoS 1/2 messages filled another worker's mailbox";
    shared_holds_expired: "counter", "SUBACKs of shared subscriptions sent before every worker confirmed the new member (the held output outgrew send_queue_limit)";
    auth_failures: "counter", "CONNECTs refused for a bad user name or password";
    auth_rate_limited: "counter", "CONNECTs refused because their address had too many failed logins";
    acl_denied: "counter", "Deliveries and wills refused by the ACL (refused PUBLISH/SUBSCRIBE are answered in their acks)";
    sessions_expired: "counter", "Offline sessions removed at expiry";
    tls_handshakes: "counter", "TLS handshakes completed";
    tls_handshake_failures: "counter", "TLS connections closed by a failed handshake (bad record, alert, certificate refused)";
    tls_errors: "counter", "TLS connections closed by a TLS error after the handshake";
    ws_handshakes: "counter", "WebSocket upgrades accepted";
    ws_handshake_failures: "counter", "WebSocket upgrade requests refused with an HTTP error";
    ws_errors: "counter", "WebSocket connections closed for a bad frame (close 1002, 1003, 1007 or 1009)";
    proxy_errors: "counter", "Connections on a PROXY protocol listener closed for a bad or missing PROXY header";
    storage_commits: "counter", "Log commits (one write and, in sync and batched mode, one fdatasync for every group of records)";
    storage_bytes_written: "counter", "Bytes written to the log";
    storage_commit_micros: "counter", "Total time of log commits (write plus fdatasync), microseconds";
    storage_commit_le_1ms: "counter", "Log commits that took at most 1 ms";
    storage_commit_le_10ms: "counter", "Log commits that took more than 1 ms and at most 10 ms";
    storage_commit_le_100ms: "counter", "Log commits that took more than 10 ms and at most 100 ms";
    storage_commit_gt_100ms: "counter", "Log commits that took more than 100 ms";
    storage_errors: "counter", "Log or snapshot writes that failed (disk full, I/O error); retried";
    storage_refused: "counter", "QoS 1/2 PUBLISHes and persistent CONNECTs refused while the log could not be written";
    snapshots: "counter", "Snapshots written";
    snapshot_last_micros: "gauge", "Duration of the last snapshot (serialise plus write), microseconds";
    snapshot_last_bytes: "gauge", "Size of the last snapshot in bytes";
    recovery_micros: "gauge", "Duration of the recovery at start (read and replay), microseconds";
    recovery_records: "gauge", "Records read at start (snapshots and logs)";
    cluster_peers_linked: "gauge", "Cluster: peer links up (outgoing, one per other node)";
    cluster_forwarded: "counter", "Cluster: messages sent to other nodes (one per node they went to)";
    cluster_received: "counter", "Cluster: messages received from other nodes";
    cluster_drops: "counter", "Cluster: messages dropped on the way between nodes: QoS 0 beyond peer_queue_bytes, QoS 1/2 beyond 4x it for a peer not linked, a shared-subscription message whose group had no member left here, a relay during a cross-node cut-over";
    cluster_claims: "counter", "Cluster: client ids claimed in etcd (one per CONNECT)";
    cluster_remote_takeovers: "counter", "Cluster: take-overs of a client id held on another node, asked by this node";
    cluster_sessions_in: "counter", "Cluster: sessions that continued here from another node";
    cluster_sessions_out: "counter", "Cluster: sessions handed to another node";
    cluster_fences: "counter", "Cluster: times this node lost its lease and closed everything it held";
    cluster_fenced_sessions: "counter", "Cluster: offline sessions ended by fencing";
    cluster_stale_sessions: "counter", "Cluster: sessions restored from the data dir and dropped because another node holds their client id";
    cluster_etcd_errors: "counter", "Cluster: etcd requests that failed (retried)";
}

pub type Metrics = Arc<Vec<Arc<WorkerMetrics>>>;

/// A cluster node's figures for `$SYS/cluster/{node}/...`: every `cluster_*` counter
/// (`cluster_peers_linked` as `peers/linked`), and its connections and sessions.
pub fn cluster_sys_topics(node: &str, totals: &[u64]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ((name, _, _), v) in WorkerMetrics::FIELDS.iter().zip(totals) {
        if let Some(rest) = name.strip_prefix("cluster_") {
            out.push((
                format!("$SYS/cluster/{node}/{}", rest.replace('_', "/")),
                v.to_string(),
            ));
        }
    }
    for (name, topic) in [
        ("connections_current", "clients/connected"),
        ("sessions_current", "sessions"),
    ] {
        if let Some(i) = WorkerMetrics::FIELDS.iter().position(|f| f.0 == name) {
            out.push((
                format!("$SYS/cluster/{node}/{topic}"),
                totals[i].to_string(),
            ));
        }
    }
    out
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

/// Sum of every worker's counters, in `WorkerMetrics::FIELDS` order.
pub fn totals(workers: &[Arc<WorkerMetrics>]) -> Vec<u64> {
    let mut sum = vec![0u64; WorkerMetrics::FIELDS.len()];
    for w in workers {
        for (s, v) in sum.iter_mut().zip(w.values()) {
            *s += v;
        }
    }
    sum
}

/// Prometheus text exposition format.
pub fn render_prometheus(workers: &[Arc<WorkerMetrics>]) -> String {
    let mut out = String::new();
    for ((name, kind, help), v) in WorkerMetrics::FIELDS.iter().zip(totals(workers)) {
        out.push_str(&format!(
            "# HELP ringmq_{name} {help}\n# TYPE ringmq_{name} {kind}\nringmq_{name} {v}\n"
        ));
    }
    out
}

/// Serve `GET /metrics` on `addr` from a background thread (one request at a time; the
/// endpoint is for a scraper, not for the public).
pub fn serve_prometheus(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("ringmq-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // The rest of the head, up to the blank line: closing the socket with a
                // request still unread would reset the connection (RST) and the client
                // could lose the answer.
                let mut header = String::new();
                while matches!(reader.read_line(&mut header), Ok(n) if n > 0)
                    && !matches!(header.as_str(), "\r\n" | "\n")
                {
                    header.clear();
                }
                let body = render_prometheus(&metrics);
                let (status, body) = if line.starts_with("GET /metrics") {
                    ("200 OK", body)
                } else {
                    ("404 Not Found", String::from("not found\n"))
                };
                let mut w = &stream;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(local)
}

/// `$SYS/broker/...` figures published under Mosquitto's name (where Mosquitto has the same
/// figure): (ringmq counter, Mosquitto topic below `$SYS/broker/`).
pub const SYS_MOSQUITTO_NAMES: &[(&str, &str)] = &[
    ("connections_current", "clients/connected"),
    ("sessions_current", "clients/total"),
    ("sessions_expired", "clients/expired"),
    ("packets_in", "messages/received"),
    ("packets_out", "messages/sent"),
    ("publish_in", "publish/messages/received"),
    ("publish_out", "publish/messages/sent"),
    ("bytes_in", "bytes/received"),
    ("bytes_out", "bytes/sent"),
];

/// Mosquitto's `$SYS/broker/load/<name>/{1min,5min,15min}`: the counters (summed) whose
/// per-minute rate they average.
const SYS_LOADS: &[(&str, &[&str])] = &[
    ("messages/received", &["packets_in"]),
    ("messages/sent", &["packets_out"]),
    ("publish/received", &["publish_in"]),
    ("publish/sent", &["publish_out"]),
    (
        "publish/dropped",
        &["slow_consumer_drops", "queue_drops", "mailbox_drops"],
    ),
    ("bytes/received", &["bytes_in"]),
    ("bytes/sent", &["bytes_out"]),
    ("connections", &["connections_total"]),
    ("sockets", &["connections_total"]),
];

const SYS_LOAD_WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// What the `$SYS` publisher remembers between two publications: the previous counter
/// values (for the load averages) and the most clients connected at once.
#[derive(Debug, Default)]
pub struct SysState {
    /// Uptime (seconds) and the counters of `SYS_LOADS` at the previous publication (None:
    /// the start, uptime 0 and every counter 0).
    last: Option<(f64, Vec<u64>)>,
    /// Per-minute rates averaged over 1, 5 and 15 minutes, for each of `SYS_LOADS`.
    load: Vec<[f64; 3]>,
    max_connected: u64,
}

fn field(totals: &[u64], name: &str) -> u64 {
    WorkerMetrics::FIELDS
        .iter()
        .position(|(n, _, _)| *n == name)
        .map_or(0, |i| totals[i])
}

impl SysState {
    /// Every `$SYS/broker/...` topic and its payload for counter `totals` (in
    /// `WorkerMetrics::FIELDS` order) at `uptime`: Mosquitto's names where the figure is the
    /// same, `$SYS/broker/<counter with / for _>` for the other counters, and the load
    /// averages as Mosquitto computes them (an exponentially weighted moving average of the
    /// per-minute rate, updated at each publication).
    pub fn topics(
        &mut self,
        totals: &[u64],
        uptime: std::time::Duration,
        retained: usize,
    ) -> Vec<(String, String)> {
        let now = uptime.as_secs_f64();
        if self.last.as_ref().is_some_and(|(t, _)| *t > now) {
            // A new broker on this thread.
            *self = SysState::default();
        }
        let mut out: Vec<(String, String)> = Vec::new();
        let mut put = |t: &str, v: String| out.push((format!("$SYS/broker/{t}"), v));
        for ((name, _, _), v) in WorkerMetrics::FIELDS.iter().zip(totals) {
            match SYS_MOSQUITTO_NAMES.iter().find(|(n, _)| n == name) {
                Some((_, mosquitto)) => put(mosquitto, v.to_string()),
                None => put(&name.replace('_', "/"), v.to_string()),
            }
        }
        let connected = field(totals, "connections_current");
        let sessions = field(totals, "sessions_current");
        self.max_connected = self.max_connected.max(connected);
        put(
            "clients/disconnected",
            sessions.saturating_sub(connected).to_string(),
        );
        put("clients/maximum", self.max_connected.to_string());
        let dropped: u64 = ["slow_consumer_drops", "queue_drops", "mailbox_drops"]
            .iter()
            .map(|n| field(totals, n))
            .sum();
        put("publish/messages/dropped", dropped.to_string());
        put("retained messages/count", retained.to_string());
        put("uptime", format!("{} seconds", uptime.as_secs()));
        put(
            "version",
            format!("ringmq version {}", env!("CARGO_PKG_VERSION")),
        );
        let current: Vec<u64> = SYS_LOADS
            .iter()
            .map(|(_, names)| names.iter().map(|n| field(totals, n)).sum())
            .collect();
        if self.load.len() != SYS_LOADS.len() {
            self.load = vec![[0.0; 3]; SYS_LOADS.len()];
        }
        // Before the first publication: the counters at the start, all 0.
        let (then, prev) = self
            .last
            .take()
            .unwrap_or_else(|| (0.0, vec![0; SYS_LOADS.len()]));
        {
            let dt = now - then;
            if dt > 0.0 {
                for (i, avg) in self.load.iter_mut().enumerate() {
                    let per_minute = current[i].saturating_sub(prev[i]) as f64 * 60.0 / dt;
                    for (a, (_, window)) in avg.iter_mut().zip(SYS_LOAD_WINDOWS) {
                        let e = (-dt / window).exp();
                        *a = per_minute + e * (*a - per_minute);
                    }
                }
            }
        }
        for ((name, _), avg) in SYS_LOADS.iter().zip(&self.load) {
            for (a, (w, _)) in avg.iter().zip(SYS_LOAD_WINDOWS) {
                put(&format!("load/{name}/{w}"), format!("{a:.2}"));
            }
        }
        self.last = Some((now, current));
        out
    }
}

thread_local! {
    /// The `$SYS` publisher's state (worker 0's thread publishes).
    pub static SYS_STATE: std::cell::RefCell<SysState> = std::cell::RefCell::default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_workers_and_render_names_every_counter() {
        let a = Arc::new(WorkerMetrics::default());
        let b = Arc::new(WorkerMetrics::default());
        add(&a.publish_in, 3);
        add(&b.publish_in, 4);
        add(&b.connections_current, 2);
        sub(&b.connections_current, 1);
        let text = render_prometheus(&[a, b]);
        assert!(text.contains("ringmq_publish_in 7\n"));
        assert!(text.contains("ringmq_connections_current 1\n"));
        assert!(text.contains("# TYPE ringmq_connections_current gauge"));
        assert_eq!(text.matches("# HELP").count(), WorkerMetrics::FIELDS.len());
    }

    #[test]
    fn sys_topics_use_mosquitto_names_and_average_the_load() {
        let mut st = SysState::default();
        let mut totals = vec![0u64; WorkerMetrics::FIELDS.len()];
        let idx = |n: &str| WorkerMetrics::FIELDS.iter().position(|f| f.0 == n).unwrap();
        totals[idx("connections_current")] = 2;
        totals[idx("sessions_current")] = 5;
        totals[idx("publish_in")] = 100;
        let secs = std::time::Duration::from_secs;
        let t = st.topics(&totals, secs(0), 7);
        let get = |t: &[(String, String)], k: &str| {
            t.iter()
                .find(|(n, _)| n == &format!("$SYS/broker/{k}"))
                .unwrap_or_else(|| panic!("no {k}"))
                .1
                .clone()
        };
        assert_eq!(get(&t, "clients/connected"), "2");
        assert_eq!(get(&t, "clients/total"), "5");
        assert_eq!(get(&t, "clients/disconnected"), "3");
        assert_eq!(get(&t, "clients/maximum"), "2");
        assert_eq!(get(&t, "publish/messages/received"), "100");
        assert_eq!(get(&t, "retained messages/count"), "7");
        assert_eq!(get(&t, "uptime"), "0 seconds");
        assert_eq!(get(&t, "takeovers"), "0", "ringmq-only names stay");
        assert!(!t.iter().any(|(n, _)| n == "$SYS/broker/publish/in"));
        assert_eq!(get(&t, "load/publish/received/1min"), "0.00");
        // 60 more PUBLISHes in 60 s: 60 per minute, the 1 min average moves 1 - 1/e of the way.
        totals[idx("publish_in")] = 160;
        totals[idx("connections_current")] = 1;
        let t = st.topics(&totals, secs(60), 7);
        let one: f64 = get(&t, "load/publish/received/1min").parse().unwrap();
        let want = 60.0 * (1.0 - (-1.0f64).exp());
        assert!((one - want).abs() < 0.01, "{one} vs {want}");
        let five: f64 = get(&t, "load/publish/received/5min").parse().unwrap();
        assert!(five > 0.0 && five < one);
        assert_eq!(get(&t, "clients/maximum"), "2");
        // Uptime going back: a new broker on this thread starts over (from 0 at uptime 0).
        let t = st.topics(&totals, secs(30), 0);
        let fresh: f64 = get(&t, "load/publish/received/1min").parse().unwrap();
        assert!(
            fresh > one,
            "{fresh}: 160 in 30 s is faster than 60 a minute"
        );
        assert_eq!(get(&t, "clients/maximum"), "1");
    }
}
