//! Broker configuration: embedded defaults, an optional TOML file, then command-line flags.
//!
//! Precedence: defaults < `--config FILE` < flags. Every field has a default so
//! `ringmq` with no arguments runs a usable broker on 0.0.0.0:1883.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// What to do with an MQTT 3.1.1 keep-alive outside the policy (one type, defined with the
/// keep-alive rules it selects).
pub use crate::session::config::V311KeepAlivePolicy;

/// Where the MQTT username of a TLS client with a client certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CertUsername {
    /// The CONNECT packet's User Name, as on a plain listener (the default).
    #[default]
    None,
    /// The certificate subject's Common Name (replaces any CONNECT User Name).
    Cn,
    /// The certificate's first DNS subjectAltName (replaces any CONNECT User Name).
    San,
}

/// Which QoS 0 message is dropped when a connected client's QoS 0 queue (the messages its
/// socket cannot take yet) is full: `qos0_overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Qos0Overflow {
    /// The message that does not fit (the queue keeps what it has, as Mosquitto and FlashMQ
    /// drop at a full client buffer). The default.
    #[default]
    #[serde(alias = "drop_newest")]
    DropNewest,
    /// The oldest queued ones, until the new message fits (as EMQX's message queue): the
    /// client gets the most recent messages.
    #[serde(alias = "drop_oldest")]
    DropOldest,
}

/// An address or a network in CIDR notation (`10.0.0.0/8`, `::1`, `fd00::/8`), as given in
/// `ws_trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<IpNet, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl TryFrom<String> for IpNet {
    type Error = String;
    fn try_from(s: String) -> Result<IpNet, String> {
        s.parse()
    }
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event (colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen addresses (IPv4 or IPv6). Each worker gets its own SO_REUSEPORT socket per address.
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses (MQTT over TLS, usually port 8883); need `tls_cert` and `tls_key`.
    /// Each worker gets its own SO_REUSEPORT socket per address, beside the plain ones.
    pub tls_listen: Vec<SocketAddr>,
    /// Server certificate chain (PEM, leaf first).
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM): when set, TLS clients must present a certificate it signed.
    pub tls_client_ca: Option<PathBuf>,
    /// Take the MQTT username from the client certificate: "cn", "san" or "none".
    pub tls_cert_username: CertUsername,
    /// MQTT over WebSocket listen addresses (usually port 8080 or 80). Each worker gets its
    /// own SO_REUSEPORT socket per address, beside the plain ones.
    pub ws_listen: Vec<SocketAddr>,
    /// MQTT over WebSocket over TLS (usually port 8084 or 443), with the `tls_*` settings.
    pub wss_listen: Vec<SocketAddr>,
    /// The HTTP path WebSocket listeners upgrade (others get 404); the query is ignored.
    pub ws_path: String,
    /// Peers (addresses or CIDR networks) whose `X-Forwarded-For` header is believed: the
    /// header's first address becomes the client's address (failed-login limit, logs).
    pub ws_trusted_proxies: Vec<IpNet>,
    /// Which of the addresses above (in `listen`, `tls_listen`, `ws_listen` or `wss_listen`,
    /// as written there) expect a PROXY protocol v1/v2 header first on every connection (a
    /// load balancer in front): its source address becomes the client's address (failed-login
    /// limit, logs). A connection without a valid header is closed.
    pub proxy_protocol_listeners: Vec<SocketAddr>,
    /// Worker threads; 0 = one per online CPU.
    pub workers: usize,
    /// Pin worker i to CPU i % ncpu.
    pub pin_workers: bool,
    /// When set, worker i also listens on `worker_port_base + i` on the first listen address's IP,
    /// so a client (or a test) can choose the worker it lands on.
    pub worker_port_base: Option<u16>,
    pub backlog: i32,
    /// Maximum live connections per worker. One io_uring fixed-file table holds at most
    /// RLIMIT_NOFILE entries; the engine opens more rings as connections outgrow it, so this
    /// is not bounded by the open-file limit (the broker's memory and the kernel's are).
    pub max_connections_per_worker: u32,
    /// Seconds a socket may take to deliver a complete CONNECT.
    pub connect_timeout_secs: u64,
    /// Highest keep-alive accepted (MQTT 5: larger requests get Server Keep Alive = this).
    pub max_keep_alive: u16,
    /// MQTT 5: if set, every CONNACK carries this Server Keep Alive.
    pub server_keep_alive: Option<u16>,
    /// MQTT 5: Server Keep Alive imposed when a client asks for 0 (None: 0 is allowed).
    pub keep_alive_when_zero: Option<u16>,
    /// MQTT 3.1.1 keep-alive outside the policy: `clamp` (default: enforce the maximum),
    /// `refuse` (CONNACK return code 0x03 Server unavailable) or `accept` (client value kept).
    pub v311_keep_alive_policy: V311KeepAlivePolicy,
    /// Largest packet accepted, in bytes.
    pub max_packet_size: u32,
    /// Receive Maximum advertised to MQTT 5 clients (inbound QoS 1/2 in flight).
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    /// MQTT 5: most Topic Aliases the broker assigns on PUBLISH it sends to one client (also
    /// bounded by the client's Topic Alias Maximum). 0 = never use aliases towards clients.
    pub outbound_topic_aliases: u16,
    /// Cap on outbound QoS 1/2 messages in flight per client.
    pub max_inflight: u16,
    /// Per-session queue limits for QoS 1/2 (messages waiting for the in-flight window or the
    /// socket, or for an offline client; with `queue_qos0_offline` also QoS 0 for an offline
    /// client): beyond them the new message is dropped for that session (`queue_drops`).
    /// Bytes count topic and payload.
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub queue_qos0_offline: bool,
    /// Per connected client: QoS 0 messages its socket cannot take yet (it holds half of
    /// `send_queue_limit`) wait in its QoS 0 queue, up to this many messages and bytes (topic
    /// and payload), and follow as the socket drains. Beyond, `qos0_overflow` decides which
    /// message is dropped (`qos0_drops_queue_messages`, `qos0_drops_queue_bytes`). 0 messages:
    /// no queue, QoS 0 is dropped at the socket. What is still queued when the connection ends
    /// is treated as QoS 0 for an offline session (`queue_qos0_offline`).
    pub max_queued_qos0_messages: usize,
    pub max_queued_qos0_bytes: usize,
    pub qos0_overflow: Qos0Overflow,
    /// Bytes in the QoS 0 queues of one worker's clients together, counting topic, payload and
    /// a 40-byte queue entry per message: beyond, a QoS 0 message that must wait is dropped
    /// (`qos0_drops_worker_bytes`; with `drop-oldest`, that client's oldest ones first).
    /// Bounds a worker's memory for them whatever the number of slow consumers.
    pub worker_qos0_queue_limit: usize,
    /// Bytes of encoded packets queued on one socket. From half of it, QoS 0 deliveries wait
    /// in the client's QoS 0 queue (`max_queued_qos0_messages`) and QoS 1/2 in the session
    /// queue. A PUBLISH already admitted may take the queue past it (by at most one message,
    /// or an in-flight window); acks and PINGRESP may use a second `send_queue_limit` of
    /// headroom, and one that does not fit in twice the limit closes the connection
    /// (`slow_consumer_disconnects`).
    pub send_queue_limit: usize,
    /// Payload bytes of messages waiting in one worker's mailbox (handed over by other
    /// workers) above which further QoS 0 messages are not handed to it (dropped, counted in
    /// `mailbox_drops`), and a publisher whose QoS 1/2 message finds it full is no longer read
    /// (TCP flow control holds it back; `publishers_paused`) until every mailbox is at most
    /// half full: a worker that falls behind a flood must not buffer it without bound.
    pub worker_mailbox_limit: usize,
    /// Cap on the Session Expiry Interval a client may request (seconds).
    pub max_session_expiry: u32,
    /// Lifetime of a 3.1.1 Clean Session = 0 session after disconnect (0xFFFFFFFF = never).
    pub v311_session_expiry: u32,
    /// MQTT 3.1 (`MQIsdp`): refuse client ids longer than 23 bytes (CONNACK 0x02), as the 3.1
    /// text says. Default false: accepted, as Mosquitto and EMQX do.
    pub v31_strict_client_id: bool,
    /// MQTT 5: an accepted QoS 1/2 PUBLISH that matched no subscription on any worker gets
    /// PUBACK / PUBREC reason 0x10 No matching subscribers (sections 3.4.2.1, 3.5.2.1) instead
    /// of 0x00. Default true (as Mosquitto and EMQX); see `broker::router` for the guarantee.
    pub no_matching_subscribers_reason: bool,
    /// Upper bound on stored sessions (online and offline) per worker.
    pub max_sessions_per_worker: usize,
    pub retain_available: bool,
    pub wildcard_subscriptions: bool,
    pub shared_subscriptions: bool,
    pub subscription_identifiers: bool,
    /// Refuse a take-over by a connection authenticated as a different user.
    pub refuse_takeover_by_other_user: bool,
    /// TCP keepalive on accepted sockets (supplements the MQTT keep-alive).
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// TCP_USER_TIMEOUT in milliseconds (bounds unacknowledged writes to a dead peer).
    pub tcp_user_timeout_ms: Option<u32>,
    /// Prometheus text endpoint (`GET /metrics`), e.g. "127.0.0.1:9883".
    pub metrics_listen: Option<SocketAddr>,
    /// Period of `$SYS/broker/...` publications in seconds (0 = off).
    pub sys_interval_secs: u64,
    /// Provided buffers per worker and their size.
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    /// Adaptive completion batching (microseconds, 0 = off): while completions arrive faster
    /// than one per half of this, a worker waits up to this long for several per wake-up
    /// (less CPU per message, at most this much more latency); an idle or lightly loaded
    /// worker handles a lone message at once.
    pub batch_wait_us: u32,
    /// Password file (`username:argon2-PHC-hash` lines, see `ringmq passwd`). When set, a
    /// CONNECT with a user name must carry that user's password.
    pub password_file: Option<PathBuf>,
    /// ACL file (see `auth::acl` and docs/security.md). When set, anything it does not grant is refused.
    pub acl_file: Option<PathBuf>,
    /// Accept CONNECTs without a user name. Default: true without `password_file`, false with one.
    pub allow_anonymous: Option<bool>,
    /// Failed logins per source IP allowed back to back (token bucket size; 0 = no limit).
    pub auth_fail_burst: u32,
    /// One more failed login is allowed every this many seconds (token refill period).
    pub auth_fail_refill_secs: u64,
    /// Threads that verify passwords (off the workers' event loops).
    pub auth_threads: usize,
    /// Log lines as `text` or `json` (the level comes from `RUST_LOG`, default `info`).
    pub log_format: LogFormat,
    /// Persistence: sessions, subscriptions, in-flight and queued messages and retained
    /// messages are kept in this directory and survive a restart or a crash (see
    /// docs/durability.md). None: in memory only.
    pub data_dir: Option<PathBuf>,
    /// With `data_dir`: `sync` (acknowledged = on disk, the default), `batched` (fdatasync
    /// every `commit_interval_ms`) or `none` (snapshots only).
    pub durability: crate::storage::Durability,
    /// `batched`: milliseconds between fdatasyncs.
    pub commit_interval_ms: u64,
    /// Seconds between snapshots (each bounds the log and the recovery time).
    pub snapshot_interval_secs: u64,
    /// Start from the last good record when a log is damaged before its end (what follows
    /// is lost) instead of refusing to start.
    pub recover_truncate: bool,
    /// Clustering on etcd (`[cluster]`, see docs/cluster.md); off without `etcd`.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: a node of a ringmq cluster whose membership, leases and ClientId ownership
/// live in etcd; messages travel over direct peer links (docs/cluster.md).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://127.0.0.1:2379`); empty: no cluster.
    pub etcd: Vec<String>,
    /// This node's name, unique in the cluster (default: the host name).
    pub node_name: Option<String>,
    /// The peer link's listen address, which other nodes connect to (port 0: any, and the
    /// bound one is announced).
    pub listen: Option<SocketAddr>,
    /// The node's etcd lease (seconds): a node that cannot renew it for this long stops
    /// acting as the owner of its client ids and closes their connections (fencing).
    pub lease_secs: u64,
    /// The key prefix in etcd (several clusters can share one etcd).
    pub prefix: String,
    /// Bytes of messages waiting for one linked peer's acknowledgement before back-pressure:
    /// QoS 0 beyond it is dropped (`cluster_drops`), QoS 1/2 publishers to other nodes pause
    /// (`cluster::node::admit`).
    pub peer_queue_bytes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd: Vec::new(),
            node_name: None,
            listen: None,
            lease_secs: 10,
            prefix: "/ringmq/".into(),
            peer_queue_bytes: 64 << 20,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepalive {
    pub idle_secs: u32,
    pub interval_secs: u32,
    pub count: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["0.0.0.0:1883".parse().expect("literal address")],
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_cert_username: CertUsername::None,
            ws_listen: Vec::new(),
            wss_listen: Vec::new(),
            ws_path: crate::ws::DEFAULT_PATH.to_owned(),
            ws_trusted_proxies: Vec::new(),
            proxy_protocol_listeners: Vec::new(),
            workers: 0,
            pin_workers: true,
            worker_port_base: None,
            backlog: 65535,
            max_connections_per_worker: 1 << 20,
            connect_timeout_secs: 10,
            max_keep_alive: 65535,
            server_keep_alive: None,
            keep_alive_when_zero: None,
            v311_keep_alive_policy: V311KeepAlivePolicy::Clamp,
            max_packet_size: 1 << 20,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            outbound_topic_aliases: 0,
            max_inflight: 64,
            max_queued_messages: 1000,
            max_queued_bytes: 8 << 20,
            queue_qos0_offline: false,
            max_queued_qos0_messages: 250_000,
            max_queued_qos0_bytes: 32 << 20,
            qos0_overflow: Qos0Overflow::DropNewest,
            worker_qos0_queue_limit: 256 << 20,
            send_queue_limit: 1 << 20,
            worker_mailbox_limit: 16 << 20,
            max_session_expiry: u32::MAX,
            v311_session_expiry: u32::MAX,
            v31_strict_client_id: false,
            no_matching_subscribers_reason: true,
            max_sessions_per_worker: 1_000_000,
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            refuse_takeover_by_other_user: false,
            tcp_keepalive: None,
            tcp_user_timeout_ms: None,
            metrics_listen: None,
            sys_interval_secs: 10,
            recv_buffers: 4096,
            recv_buffer_size: 4096,
            batch_wait_us: 250,
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            auth_fail_burst: 5,
            auth_fail_refill_secs: 12,
            auth_threads: 1,
            log_format: LogFormat::Text,
            data_dir: None,
            durability: crate::storage::Durability::Sync,
            commit_interval_ms: 100,
            snapshot_interval_secs: 300,
            recover_truncate: false,
            cluster: ClusterConfig::default(),
        }
    }
}

impl Config {
    /// Parse a TOML configuration; an error names the line and the key
    /// ([`describe_toml_error`]).
    pub fn from_toml_str(s: &str) -> Result<Config, String> {
        toml::from_str(s).map_err(|e| describe_toml_error(s, &e))
    }

    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Worker count after resolving 0 to the number of CPUs.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// `allow_anonymous` after applying its default.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }

    /// Check values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|e| e.message)
    }

    /// [`Config::validate`], naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, message: String| Err(ConfigError { key, message });
        if self.listen.is_empty()
            && self.tls_listen.is_empty()
            && self.ws_listen.is_empty()
            && self.wss_listen.is_empty()
        {
            return bad(
                "listen",
                "at least one listen, tls_listen, ws_listen or wss_listen address is needed".into(),
            );
        }
        if self.cluster.enabled() {
            if self.cluster.listen.is_none() {
                return bad(
                    "cluster",
                    "a cluster node needs cluster listen (--cluster-listen ADDR:PORT), the \
                     address the other nodes connect to"
                        .into(),
                );
            }
            if self.cluster.lease_secs < 2 {
                return bad(
                    "cluster",
                    "cluster lease_secs must be at least 2 (etcd's lease granularity)".into(),
                );
            }
        }
        if self.listen.is_empty() && self.worker_port_base.is_some() {
            return bad(
                "worker_port_base",
                "worker_port_base needs a plain listen address".into(),
            );
        }
        if !self.tls_listen.is_empty() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return bad("tls_listen", "tls_listen needs tls_cert and tls_key".into());
        }
        if !self.wss_listen.is_empty() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return bad("wss_listen", "wss_listen needs tls_cert and tls_key".into());
        }
        if let Some(a) = self.proxy_protocol_listeners.iter().find(|a| {
            ![
                &self.listen,
                &self.tls_listen,
                &self.ws_listen,
                &self.wss_listen,
            ]
            .iter()
            .any(|l| l.contains(a))
        }) {
            return bad(
                "proxy_protocol_listeners",
                format!("{a} is not a listen, tls_listen, ws_listen or wss_listen address"),
            );
        }
        if !self.ws_path.starts_with('/') || self.ws_path.contains(['?', ' ']) {
            return bad(
                "ws_path",
                format!(
                    "ws_path must start with / and hold no query or space, got {:?}",
                    self.ws_path
                ),
            );
        }
        if self.tls_cert_username != CertUsername::None && self.tls_client_ca.is_none() {
            // Without required client certificates a client could choose to send none and
            // keep the username of its CONNECT.
            return bad(
                "tls_cert_username",
                "tls_cert_username needs tls_client_ca (client certificates)".into(),
            );
        }
        if self.receive_maximum == 0 {
            return bad(
                "receive_maximum",
                "receive_maximum must be at least 1".into(),
            );
        }
        if self.max_inflight == 0 {
            return bad("max_inflight", "max_inflight must be at least 1".into());
        }
        if self.max_packet_size < 16 {
            return bad(
                "max_packet_size",
                "max_packet_size must be at least 16 bytes".into(),
            );
        }
        if self.commit_interval_ms == 0 {
            return bad(
                "commit_interval_ms",
                "commit_interval_ms and snapshot_interval_secs must be at least 1".into(),
            );
        }
        if self.snapshot_interval_secs == 0 {
            return bad(
                "snapshot_interval_secs",
                "commit_interval_ms and snapshot_interval_secs must be at least 1".into(),
            );
        }
        if !self.recv_buffers.is_power_of_two() {
            return bad("recv_buffers", "recv_buffers must be a power of two".into());
        }
        if !self.allow_anonymous() && self.password_file.is_none() {
            return bad(
                "allow_anonymous",
                "allow_anonymous = false needs a password_file (nobody could log in)".into(),
            );
        }
        if self.auth_threads == 0 {
            return bad("auth_threads", "auth_threads must be at least 1".into());
        }
        if self.max_connections_per_worker == 0 {
            return bad(
                "max_connections_per_worker",
                "max_connections_per_worker must be at least 1".into(),
            );
        }
        if self.max_queued_qos0_messages > 0 && self.max_queued_qos0_bytes == 0 {
            return bad(
                "max_queued_qos0_bytes",
                "a QoS 0 queue of 0 bytes holds nothing: set max_queued_qos0_messages = 0 to \
                 turn it off"
                    .into(),
            );
        }
        // Slots and session indexes stay below 2^30: the timer wheel's keys use the top bit.
        if self.max_connections_per_worker > MAX_SLOTS as u32 {
            return bad(
                "max_connections_per_worker",
                format!("max_connections_per_worker must be at most {MAX_SLOTS}"),
            );
        }
        if self.max_sessions_per_worker > MAX_SLOTS {
            return bad(
                "max_sessions_per_worker",
                format!("max_sessions_per_worker must be at most {MAX_SLOTS}"),
            );
        }
        Ok(())
    }
}

/// The most connections or sessions one worker may hold (2^30).
pub const MAX_SLOTS: usize = 1 << 30;

/// A value [`Config::check`] refuses: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key a line of TOML sets (`a = 1` -> `a`, `[t]` -> `t`), prefixed by its table.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        let header = l
            .strip_prefix('[')
            .and_then(|h| h.split(']').next())
            .map(|h| h.trim_matches(['[', ' ']).to_owned());
        if i + 1 == line {
            return match (header, l.split_once('=')) {
                (Some(h), _) => Some(h),
                (None, Some((k, _))) => {
                    let k = k.trim().trim_matches(['"', '\'']);
                    Some(if table.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{table}.{k}")
                    })
                }
                (None, None) => None,
            };
        }
        if let Some(h) = header {
            table = h;
        }
    }
    None
}

/// A TOML error as `line N: key `K`: what` (the key and line from the error's span).
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut what = e.message().trim().replace('\n', "; ");
    // serde lists every field after an unknown one: too long to be of use.
    if let Some(i) = what.find(", expected one of") {
        what.truncate(i);
    }
    let Some(span) = e.span() else {
        return what;
    };
    let line = line_of(text, span.start);
    match key_on_line(text, line) {
        Some(key) => format!("line {line}: key `{key}`: {what}"),
        None => format!("line {line}: {what}"),
    }
}

/// The line where the top-level `key` is set in `text` (before any table header).
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.starts_with('[') {
            return None;
        }
        if let Some((k, _)) = l.split_once('=') {
            if k.trim().trim_matches(['"', '\'']) == key {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_1883() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen[0].port(), 1883);
        assert_eq!(c.connect_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c = Config::from_toml_str(
            "listen = [\"127.0.0.1:1999\", \"[::1]:1999\"]\nworkers = 3\nserver_keep_alive = 30\n\
             [tcp_keepalive]\nidle_secs = 60\ninterval_secs = 10\ncount = 3\n",
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[1].is_ipv6());
        assert_eq!(c.workers, 3);
        assert_eq!(c.server_keep_alive, Some(30));
        assert_eq!(c.tcp_keepalive.unwrap().count, 3);
        assert_eq!(c.max_keep_alive, 65535);
        assert!(Config::from_toml_str("no_such_key = 1").is_err());
        let c = Config::from_toml_str(
            "tls_listen = [\"0.0.0.0:8883\"]\ntls_cert = \"s.pem\"\ntls_key = \"k.pem\"\n\
             tls_client_ca = \"ca.pem\"\ntls_cert_username = \"cn\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.tls_listen[0].port(), 8883);
        assert_eq!(c.tls_cert_username, CertUsername::Cn);
    }

    #[test]
    fn validate_rejects_nonsense() {
        let c = Config {
            recv_buffers: 1000,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            listen: vec![],
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            tls_listen: vec!["127.0.0.1:8883".parse().unwrap()],
            ..Config::default()
        };
        assert!(c.validate().is_err(), "TLS without a certificate");
        let c = Config {
            tls_cert_username: CertUsername::Cn,
            ..Config::default()
        };
        assert!(c.validate().is_err(), "cert username without client CA");
        let c = Config {
            max_queued_qos0_bytes: 0,
            ..Config::default()
        };
        assert_eq!(c.check().unwrap_err().key, "max_queued_qos0_bytes");
        let c = Config {
            max_connections_per_worker: (MAX_SLOTS + 1) as u32,
            ..Config::default()
        };
        assert_eq!(c.check().unwrap_err().key, "max_connections_per_worker");
    }

    #[test]
    fn qos0_overflow_policy_is_named_in_toml() {
        let c = Config::from_toml_str("qos0_overflow = \"drop-oldest\"\n").unwrap();
        assert_eq!(c.qos0_overflow, Qos0Overflow::DropOldest);
        assert_eq!(Config::default().qos0_overflow, Qos0Overflow::DropNewest);
        let e = Config::from_toml_str("qos0_overflow = \"drop-random\"\n").unwrap_err();
        assert!(e.contains("qos0_overflow"), "{e}");
        // Off: QoS 0 is dropped at the socket as before the queue existed.
        let c = Config::from_toml_str("max_queued_qos0_messages = 0\n").unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn websocket_settings() {
        let c = Config::from_toml_str(
            "ws_listen = [\"127.0.0.1:8080\", \"[::1]:8080\"]\nws_path = \"/ws\"\n\
             ws_trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"fd00::/8\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.ws_listen.len(), 2);
        assert_eq!(c.ws_path, "/ws");
        assert_eq!(Config::default().ws_path, "/mqtt");
        let p = &c.ws_trusted_proxies;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p[0].contains(ip("10.1.2.3")) && !p[0].contains(ip("11.0.0.1")));
        assert!(p[1].contains(ip("192.0.2.7")) && !p[1].contains(ip("192.0.2.8")));
        assert!(p[2].contains(ip("fd12::1")) && !p[2].contains(ip("fe80::1")));
        assert!(
            p[0].contains(ip("::ffff:10.0.0.1")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!p[2].contains(ip("10.0.0.1")));
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
        let c = Config {
            wss_listen: vec!["127.0.0.1:8084".parse().unwrap()],
            ..Config::default()
        };
        assert_eq!(
            c.check().unwrap_err().key,
            "wss_listen",
            "WSS without a certificate"
        );
        let c = Config {
            ws_path: "mqtt".into(),
            ..Config::default()
        };
        assert_eq!(c.check().unwrap_err().key, "ws_path");
        let c = Config {
            listen: vec![],
            ws_listen: vec!["127.0.0.1:8080".parse().unwrap()],
            ..Config::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn proxy_protocol_listeners_name_configured_addresses() {
        let c = Config::from_toml_str(
            "listen = [\"127.0.0.1:1883\", \"127.0.0.1:1884\"]\n\
             ws_listen = [\"[::1]:8080\"]\n\
             proxy_protocol_listeners = [\"127.0.0.1:1884\", \"[::1]:8080\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.proxy_protocol_listeners.len(), 2);
        assert!(Config::default().proxy_protocol_listeners.is_empty());
        let c = Config {
            proxy_protocol_listeners: vec!["127.0.0.1:1885".parse().unwrap()],
            ..Config::default()
        };
        let e = c.check().unwrap_err();
        assert_eq!(e.key, "proxy_protocol_listeners");
        assert!(e.message.contains("127.0.0.1:1885"), "{}", e.message);
    }

    #[test]
    fn toml_errors_name_the_line_and_key() {
        let e = Config::from_toml_str("workers = 1\n\nbogus = 2\n").unwrap_err();
        assert_eq!(e, "line 3: key `bogus`: unknown field `bogus`");
        let e = Config::from_toml_str("[tcp_keepalive]\nidle_secs = \"x\"\n").unwrap_err();
        assert!(
            e.starts_with("line 2: key `tcp_keepalive.idle_secs`: "),
            "{e}"
        );
        assert_eq!(
            line_of_key("a = 1\n  max_inflight= 0\n[t]\nb = 1\n", "max_inflight"),
            Some(2)
        );
        assert_eq!(line_of_key("[t]\nmax_inflight = 0\n", "max_inflight"), None);
    }

    #[test]
    fn allow_anonymous_defaults_on_the_password_file() {
        let c = Config::default();
        assert!(c.allow_anonymous());
        let c = Config::from_toml_str("password_file = \"/etc/ringmq/passwd\"").unwrap();
        assert!(!c.allow_anonymous());
        c.validate().unwrap();
        let c = Config::from_toml_str(
            "password_file = \"p\"\nallow_anonymous = true\nacl_file = \"a\"",
        )
        .unwrap();
        assert!(c.allow_anonymous());
        let c = Config::from_toml_str("allow_anonymous = false").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn cluster_table_and_its_checks() {
        let c = Config::from_toml_str(
            "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nnode_name = \"a\"\n\
             listen = \"127.0.0.1:7001\"\nlease_secs = 5\n",
        )
        .unwrap();
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.node_name.as_deref(), Some("a"));
        assert_eq!(c.cluster.lease_secs, 5);
        assert_eq!(c.cluster.prefix, "/ringmq/");
        c.validate().unwrap();
        assert!(!Config::default().cluster.enabled());
        // A node needs a peer-link address, and a lease etcd can keep.
        let e = Config::from_toml_str("[cluster]\netcd = [\"http://e:2379\"]\n")
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(e.key, "cluster");
        assert!(e.message.contains("--cluster-listen"), "{}", e.message);
        let e = Config::from_toml_str(
            "[cluster]\netcd = [\"http://e:2379\"]\nlisten = \"127.0.0.1:0\"\nlease_secs = 1\n",
        )
        .unwrap()
        .check()
        .unwrap_err();
        assert!(e.message.contains("lease_secs"));
        assert!(Config::from_toml_str("[cluster]\nbogus = 1\n").is_err());
    }
}
