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
    slow_consumer_drops: "counter", "QoS 0 messages dropped because the socket queue was full";
    slow_consumer_disconnects: "counter", "Connections closed because a packet that cannot be dropped (an ack) found the socket queue full";
    queue_drops: "counter", "Messages dropped because a session queue was full";
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
}

pub type Metrics = Arc<Vec<Arc<WorkerMetrics>>>;

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
}
