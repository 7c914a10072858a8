use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use ringmq::config::{CertUsername, Config, IpNet, LogFormat, TcpKeepalive, V311KeepAlivePolicy};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringmq: a thread-per-core io_uring MQTT 3.1.1 / 5.0 broker.
///
/// With no arguments it listens on 0.0.0.0:1883 with one worker per CPU.
/// Precedence: embedded defaults < --config FILE < flags.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Listen address, repeatable (IPv4 or IPv6, e.g. 0.0.0.0:1883 or [::]:1883).
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// TLS listen address, repeatable (MQTT over TLS, e.g. 0.0.0.0:8883); needs --tls-cert
    /// and --tls-key.
    #[arg(long = "tls-listen", value_name = "ADDR:PORT")]
    tls_listen: Vec<SocketAddr>,
    /// Server certificate chain for the TLS listeners (PEM, leaf first).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Server private key for the TLS listeners (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM): TLS clients must present a certificate signed by it.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Use the client certificate's CN or first DNS SAN as the MQTT username.
    #[arg(long, value_enum)]
    tls_cert_username: Option<CertUsername>,
    /// MQTT over WebSocket listen address, repeatable (e.g. 0.0.0.0:8080).
    #[arg(long = "ws-listen", value_name = "ADDR:PORT")]
    ws_listen: Vec<SocketAddr>,
    /// MQTT over WebSocket over TLS listen address, repeatable (e.g. 0.0.0.0:8084); uses
    /// --tls-cert and --tls-key.
    #[arg(long = "wss-listen", value_name = "ADDR:PORT")]
    wss_listen: Vec<SocketAddr>,
    /// HTTP path the WebSocket listeners upgrade (default /mqtt); other paths get 404.
    #[arg(long, value_name = "PATH")]
    ws_path: Option<String>,
    /// Proxy address or CIDR network whose X-Forwarded-For header is believed, repeatable.
    #[arg(long = "ws-trusted-proxy", value_name = "ADDR|CIDR")]
    ws_trusted_proxies: Vec<IpNet>,
    /// A listen address (of --listen, --tls-listen, --ws-listen or --wss-listen) whose
    /// connections start with a PROXY protocol v1/v2 header from a load balancer; repeatable.
    #[arg(long = "proxy-protocol", value_name = "ADDR:PORT")]
    proxy_protocol: Vec<SocketAddr>,
    /// Log lines as text (the default) or json.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Check the configuration (file and flags, and the files it names), print a summary
    /// and exit: 0 when it is fine, 2 with the key (and its line) at fault otherwise.
    #[arg(long)]
    check_config: bool,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// TOML configuration file (every key: docs/configuration.md and packaging/ringmq.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Worker i also listens on PORT+i (lets a client choose its worker).
    #[arg(long, value_name = "PORT")]
    worker_port_base: Option<u16>,
    /// Maximum live connections per worker.
    #[arg(long)]
    max_connections_per_worker: Option<u32>,
    /// Seconds a socket may take to send a complete CONNECT.
    #[arg(long)]
    connect_timeout: Option<u64>,
    /// Highest keep-alive accepted, seconds.
    #[arg(long)]
    max_keep_alive: Option<u16>,
    /// MQTT 5 Server Keep Alive forced in every CONNACK, seconds.
    #[arg(long)]
    server_keep_alive: Option<u16>,
    /// MQTT 3.1.1 keep-alive above --max-keep-alive: clamp or refuse.
    #[arg(long, value_enum)]
    v311_keep_alive_policy: Option<V311KeepAlivePolicy>,
    /// MQTT 3.1 (MQIsdp): refuse client ids longer than 23 bytes (CONNACK 0x02).
    #[arg(long, value_name = "BOOL")]
    v31_strict_client_id: Option<bool>,
    /// MQTT 5: PUBACK / PUBREC 0x10 for a QoS 1/2 PUBLISH no subscription matched (default true).
    #[arg(long, value_name = "BOOL")]
    no_matching_subscribers_reason: Option<bool>,
    /// Largest packet accepted, bytes.
    #[arg(long)]
    max_packet_size: Option<u32>,
    /// TCP keepalive on accepted sockets: IDLE,INTERVAL,COUNT (seconds, seconds, probes).
    #[arg(long, value_name = "IDLE,INTVL,CNT")]
    tcp_keepalive: Option<String>,
    /// TCP_USER_TIMEOUT on accepted sockets, milliseconds.
    #[arg(long)]
    tcp_user_timeout_ms: Option<u32>,
    /// Prometheus endpoint address (GET /metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Do not pin workers to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Adaptive completion batching: a busy worker waits up to this many microseconds to
    /// handle several packets per wake-up; idle or light load adds no latency (default 250,
    /// 0 = off).
    #[arg(long, value_name = "MICROS")]
    batch_wait_us: Option<u32>,
    /// Password file (`ringmq passwd FILE USER` creates it): CONNECTs with a user name must
    /// carry its password; anonymous clients are refused unless --allow-anonymous.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// ACL file (topic read/write rules per user; see docs/security.md).
    #[arg(long, value_name = "FILE")]
    acl_file: Option<PathBuf>,
    /// Accept clients without a user name (default: only when no password file is given).
    #[arg(long, value_name = "BOOL")]
    allow_anonymous: Option<bool>,
    /// Keep sessions, in-flight and queued messages and retained messages in DIR across
    /// restarts and crashes (default: in memory only).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: sync (an acknowledgement means on disk), batched (fdatasync every
    /// --commit-interval-ms) or none (snapshots only).
    #[arg(long, value_enum)]
    durability: Option<ringmq::storage::Durability>,
    /// batched durability: milliseconds between fdatasyncs (default 100).
    #[arg(long, value_name = "MS")]
    commit_interval_ms: Option<u64>,
    /// Seconds between snapshots (default 300).
    #[arg(long, value_name = "SECS")]
    snapshot_interval_secs: Option<u64>,
    /// Start even if a log is damaged before its end, from its last good record.
    #[arg(long)]
    recover_truncate: bool,
    /// Join a cluster whose membership and client ids live in this etcd (repeatable:
    /// several endpoints of one etcd cluster), e.g. http://127.0.0.1:2379.
    #[arg(long, value_name = "URL")]
    cluster_etcd: Vec<String>,
    /// This node's name in the cluster (unique; default: the host name).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// The peer link's address, which the other nodes connect to.
    #[arg(long, value_name = "ADDR:PORT")]
    cluster_listen: Option<SocketAddr>,
    /// The node's etcd lease in seconds (default 10): past it unrenewed, the node fences
    /// itself.
    #[arg(long, value_name = "SECS")]
    cluster_lease_secs: Option<u64>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Add or update USERNAME in the password file FILE (created if missing, mode 0600).
    /// The password is read from standard input (first line), never from the command line.
    Passwd { file: PathBuf, username: String },
}

fn parse_keepalive(s: &str) -> Result<TcpKeepalive, String> {
    let parts: Vec<&str> = s.split(',').collect();
    if parts.len() != 3 {
        return Err(format!("--tcp-keepalive wants IDLE,INTVL,CNT, got {s:?}"));
    }
    let n = |p: &str| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}"));
    Ok(TcpKeepalive {
        idle_secs: n(parts[0])?,
        interval_secs: n(parts[1])?,
        count: n(parts[2])?,
    })
}

fn build_config(cli: Cli) -> Result<Config, String> {
    let (mut cfg, text) = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let cfg = Config::from_toml_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            (cfg, Some(text))
        }
        None => (Config::default(), None),
    };
    if !cli.ws_listen.is_empty() {
        cfg.ws_listen = cli.ws_listen;
    }
    if !cli.wss_listen.is_empty() {
        cfg.wss_listen = cli.wss_listen;
    }
    if let Some(p) = cli.ws_path {
        cfg.ws_path = p;
    }
    if !cli.ws_trusted_proxies.is_empty() {
        cfg.ws_trusted_proxies = cli.ws_trusted_proxies;
    }
    if !cli.proxy_protocol.is_empty() {
        cfg.proxy_protocol_listeners = cli.proxy_protocol;
    }
    if let Some(v) = cli.log_format {
        cfg.log_format = v;
    }
    if !cli.listen.is_empty() {
        cfg.listen = cli.listen;
    }
    if !cli.tls_listen.is_empty() {
        cfg.tls_listen = cli.tls_listen;
    }
    if cli.tls_cert.is_some() {
        cfg.tls_cert = cli.tls_cert;
    }
    if cli.tls_key.is_some() {
        cfg.tls_key = cli.tls_key;
    }
    if cli.tls_client_ca.is_some() {
        cfg.tls_client_ca = cli.tls_client_ca;
    }
    if let Some(v) = cli.tls_cert_username {
        cfg.tls_cert_username = v;
    }
    if let Some(v) = cli.workers {
        cfg.workers = v;
    }
    if cli.worker_port_base.is_some() {
        cfg.worker_port_base = cli.worker_port_base;
    }
    if let Some(v) = cli.max_connections_per_worker {
        cfg.max_connections_per_worker = v;
    }
    if let Some(v) = cli.connect_timeout {
        cfg.connect_timeout_secs = v;
    }
    if let Some(v) = cli.max_keep_alive {
        cfg.max_keep_alive = v;
    }
    if cli.server_keep_alive.is_some() {
        cfg.server_keep_alive = cli.server_keep_alive;
    }
    if let Some(v) = cli.v311_keep_alive_policy {
        cfg.v311_keep_alive_policy = v;
    }
    if let Some(v) = cli.v31_strict_client_id {
        cfg.v31_strict_client_id = v;
    }
    if let Some(v) = cli.no_matching_subscribers_reason {
        cfg.no_matching_subscribers_reason = v;
    }
    if let Some(v) = cli.max_packet_size {
        cfg.max_packet_size = v;
    }
    if let Some(s) = &cli.tcp_keepalive {
        cfg.tcp_keepalive = Some(parse_keepalive(s)?);
    }
    if cli.tcp_user_timeout_ms.is_some() {
        cfg.tcp_user_timeout_ms = cli.tcp_user_timeout_ms;
    }
    if cli.metrics_listen.is_some() {
        cfg.metrics_listen = cli.metrics_listen;
    }
    if cli.no_pin {
        cfg.pin_workers = false;
    }
    if let Some(v) = cli.batch_wait_us {
        cfg.batch_wait_us = v;
    }
    if cli.password_file.is_some() {
        cfg.password_file = cli.password_file;
    }
    if cli.acl_file.is_some() {
        cfg.acl_file = cli.acl_file;
    }
    if cli.allow_anonymous.is_some() {
        cfg.allow_anonymous = cli.allow_anonymous;
    }
    if cli.data_dir.is_some() {
        cfg.data_dir = cli.data_dir;
    }
    if let Some(v) = cli.durability {
        cfg.durability = v;
    }
    if let Some(v) = cli.commit_interval_ms {
        cfg.commit_interval_ms = v;
    }
    if let Some(v) = cli.snapshot_interval_secs {
        cfg.snapshot_interval_secs = v;
    }
    if cli.recover_truncate {
        cfg.recover_truncate = true;
    }
    if !cli.cluster_etcd.is_empty() {
        cfg.cluster.etcd = cli.cluster_etcd;
    }
    if cli.node_name.is_some() {
        cfg.cluster.node_name = cli.node_name;
    }
    if cli.cluster_listen.is_some() {
        cfg.cluster.listen = cli.cluster_listen;
    }
    if let Some(v) = cli.cluster_lease_secs {
        cfg.cluster.lease_secs = v;
    }
    if let Err(e) = cfg.check() {
        // Name the line when the bad value came from the file.
        let at = match (&cli.config, &text) {
            (Some(p), Some(t)) => ringmq::config::line_of_key(t, e.key)
                .map(|l| format!("{}: line {l}: ", p.display())),
            _ => None,
        };
        return Err(format!("{}{e}", at.unwrap_or_default()));
    }
    Ok(cfg)
}

/// `--check-config`: also load the files the configuration names (TLS certificate and key,
/// password and ACL files), which a start would refuse; print a summary.
fn check_config(cfg: &Config, file: Option<&std::path::Path>) -> Result<String, String> {
    if !cfg.tls_listen.is_empty() || !cfg.wss_listen.is_empty() {
        ringmq::tls::TlsSetup::from_config(cfg)?;
    }
    ringmq::auth::Auth::from_config(cfg)?;
    let list = |a: &[SocketAddr]| {
        a.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!(
        "configuration OK ({})\n",
        file.map_or("defaults and flags".into(), |f| f.display().to_string())
    );
    for (kind, addrs) in [
        ("listen", &cfg.listen),
        ("tls_listen", &cfg.tls_listen),
        ("ws_listen", &cfg.ws_listen),
        ("wss_listen", &cfg.wss_listen),
    ] {
        if !addrs.is_empty() {
            out += &format!("  {kind}: {}\n", list(addrs));
        }
    }
    if !cfg.proxy_protocol_listeners.is_empty() {
        out += &format!(
            "  PROXY protocol on: {}\n",
            list(&cfg.proxy_protocol_listeners)
        );
    }
    if !cfg.ws_listen.is_empty() || !cfg.wss_listen.is_empty() {
        out += &format!(
            "  ws_path: {}, trusted proxies: {}\n",
            cfg.ws_path,
            cfg.ws_trusted_proxies.len()
        );
    }
    if let Some(d) = &cfg.data_dir {
        out += &format!(
            "  data_dir: {}, durability: {:?}\n",
            d.display(),
            cfg.durability
        );
    }
    if cfg.cluster.enabled() {
        out += &format!(
            "  cluster: etcd {}, node {}, peer link {}\n",
            cfg.cluster.etcd.join(" "),
            cfg.cluster.node_name.as_deref().unwrap_or("(host name)"),
            cfg.cluster
                .listen
                .map_or("(none)".into(), |a| a.to_string()),
        );
    }
    out += &format!(
        "  workers: {}, max_packet_size: {}, password file: {}, ACL file: {}\n",
        cfg.worker_count(),
        cfg.max_packet_size,
        cfg.password_file
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
        cfg.acl_file
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    );
    Ok(out)
}

/// Logs to stderr, in the configured format; colour codes only when stderr is a terminal.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `ringmq passwd FILE USERNAME`: the password comes from stdin.
fn passwd(file: &std::path::Path, username: &str) -> i32 {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("password for {username} (input is echoed; pipe it in to avoid that):");
    }
    let pw = match ringmq::auth::passwd::password_from_reader(stdin.lock()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ringmq passwd: {e}");
            return 2;
        }
    };
    match ringmq::auth::passwd::set_password(file, username, &pw) {
        Ok(()) => {
            eprintln!("ringmq passwd: {username} set in {}", file.display());
            0
        }
        Err(e) => {
            eprintln!("ringmq passwd: {e}");
            1
        }
    }
}

fn main() {
    let mut cli = Cli::parse();
    if let Some(Command::Passwd { file, username }) = cli.command.take() {
        std::process::exit(passwd(&file, &username));
    }
    let checking = cli.check_config;
    let file = cli.config.clone();
    let cfg = match build_config(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmq: {e}");
            std::process::exit(2);
        }
    };
    if checking {
        match check_config(&cfg, file.as_deref()) {
            Ok(summary) => {
                print!("{summary}");
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("ringmq: {e}");
                std::process::exit(2);
            }
        }
    }
    init_logging(cfg.log_format);
    let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, term.clone()) {
            eprintln!("ringmq: cannot install signal handler: {e}");
            std::process::exit(1);
        }
    }
    // SIGHUP: read the password and ACL files again.
    let hup = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        eprintln!("ringmq: cannot install signal handler: {e}");
        std::process::exit(1);
    }
    let broker = match ringmq::broker::start(cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ringmq: cannot start: {e}");
            std::process::exit(1);
        }
    };
    for a in broker.local_addrs() {
        tracing::info!("listening on {a}");
    }
    for a in broker.tls_addrs() {
        tracing::info!("listening on {a} (TLS)");
    }
    for a in broker.ws_addrs() {
        tracing::info!("listening on {a} (WebSocket)");
    }
    for a in broker.wss_addrs() {
        tracing::info!("listening on {a} (WebSocket over TLS)");
    }
    if let Some(a) = broker.metrics_addr() {
        tracing::info!("metrics on http://{a}/metrics");
    }
    while !term.load(std::sync::atomic::Ordering::Relaxed) {
        if hup.swap(false, std::sync::atomic::Ordering::Relaxed) {
            match broker.reload_auth() {
                Ok(()) => tracing::info!("SIGHUP: password and ACL files reloaded"),
                Err(e) => {
                    tracing::error!("SIGHUP: reload failed, the previous files stay in force: {e}")
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tracing::info!("shutting down");
    broker.shutdown();
    broker.join();
    tracing::info!("stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults() {
        let cli = Cli::parse_from([
            "ringmq",
            "--listen",
            "127.0.0.1:1999",
            "--workers",
            "3",
            "--tcp-keepalive",
            "30,5,4",
        ]);
        let cfg = build_config(cli).unwrap();
        assert_eq!(cfg.listen, vec!["127.0.0.1:1999".parse().unwrap()]);
        assert_eq!(cfg.workers, 3);
        assert_eq!(cfg.tcp_keepalive.unwrap().count, 4);
    }

    #[test]
    fn passwd_subcommand_and_auth_flags() {
        let cli = Cli::parse_from(["ringmq", "passwd", "/tmp/pw", "alice"]);
        match cli.command {
            Some(Command::Passwd { file, username }) => {
                assert_eq!(file, PathBuf::from("/tmp/pw"));
                assert_eq!(username, "alice");
            }
            None => panic!("no subcommand"),
        }
        let cli = Cli::parse_from([
            "ringmq",
            "--listen",
            "127.0.0.1:1999",
            "--workers",
            "2",
            "--password-file",
            "/etc/pw",
            "--acl-file",
            "/etc/acl",
        ]);
        assert!(cli.command.is_none());
        let cfg = build_config(cli).unwrap();
        assert_eq!(cfg.password_file, Some(PathBuf::from("/etc/pw")));
        assert_eq!(cfg.acl_file, Some(PathBuf::from("/etc/acl")));
        assert!(!cfg.allow_anonymous());
        let cli = Cli::parse_from([
            "ringmq",
            "--password-file",
            "p",
            "--allow-anonymous",
            "true",
        ]);
        assert!(build_config(cli).unwrap().allow_anonymous());
    }

    #[test]
    fn v31_strict_client_id_flag() {
        let cli = Cli::parse_from(["ringmq"]);
        assert!(!build_config(cli).unwrap().v31_strict_client_id);
        let cli = Cli::parse_from(["ringmq", "--v31-strict-client-id", "true"]);
        assert!(build_config(cli).unwrap().v31_strict_client_id);
    }

    #[test]
    fn no_matching_subscribers_reason_flag_and_key() {
        let cli = Cli::parse_from(["ringmq"]);
        assert!(build_config(cli).unwrap().no_matching_subscribers_reason);
        let cli = Cli::parse_from(["ringmq", "--no-matching-subscribers-reason", "false"]);
        assert!(!build_config(cli).unwrap().no_matching_subscribers_reason);
        let cfg = Config::from_toml_str("no_matching_subscribers_reason = false").unwrap();
        assert!(!cfg.no_matching_subscribers_reason);
    }

    #[test]
    fn tls_flags() {
        let cli = Cli::parse_from([
            "ringmq",
            "--tls-listen",
            "127.0.0.1:8883",
            "--tls-cert",
            "s.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
            "--tls-cert-username",
            "san",
        ]);
        let cfg = build_config(cli).unwrap();
        assert_eq!(cfg.tls_listen, vec!["127.0.0.1:8883".parse().unwrap()]);
        assert_eq!(cfg.tls_key.as_deref(), Some(std::path::Path::new("k.pem")));
        assert_eq!(cfg.tls_cert_username, CertUsername::San);
        let cli = Cli::parse_from(["ringmq", "--tls-listen", "127.0.0.1:8883"]);
        assert!(build_config(cli).is_err(), "no certificate");
    }

    #[test]
    fn websocket_and_operator_flags() {
        let cli = Cli::parse_from([
            "ringmq",
            "--ws-listen",
            "127.0.0.1:8080",
            "--ws-listen",
            "[::1]:8080",
            "--wss-listen",
            "127.0.0.1:8084",
            "--tls-cert",
            "s.pem",
            "--tls-key",
            "k.pem",
            "--ws-path",
            "/ws",
            "--ws-trusted-proxy",
            "10.0.0.0/8",
            "--log-format",
            "json",
            "--check-config",
        ]);
        assert!(cli.check_config);
        let cfg = build_config(cli).unwrap();
        assert_eq!(cfg.ws_listen.len(), 2);
        assert_eq!(cfg.wss_listen, vec!["127.0.0.1:8084".parse().unwrap()]);
        assert_eq!(cfg.ws_path, "/ws");
        assert_eq!(cfg.ws_trusted_proxies.len(), 1);
        assert_eq!(cfg.log_format, LogFormat::Json);
        let cli = Cli::parse_from(["ringmq", "--wss-listen", "127.0.0.1:8084"]);
        let e = build_config(cli).unwrap_err();
        assert!(e.contains("key `wss_listen`"), "{e}");
        assert!(Cli::try_parse_from(["ringmq", "--ws-trusted-proxy", "10.0.0.0/40"]).is_err());
    }

    #[test]
    fn proxy_protocol_flag() {
        let cli = Cli::parse_from([
            "ringmq",
            "--listen",
            "127.0.0.1:1883",
            "--listen",
            "127.0.0.1:1884",
            "--ws-listen",
            "127.0.0.1:8080",
            "--proxy-protocol",
            "127.0.0.1:1884",
            "--proxy-protocol",
            "127.0.0.1:8080",
        ]);
        let cfg = build_config(cli).unwrap();
        assert_eq!(
            cfg.proxy_protocol_listeners,
            vec![
                "127.0.0.1:1884".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:8080".parse().unwrap()
            ]
        );
        let cli = Cli::parse_from(["ringmq", "--proxy-protocol", "127.0.0.1:9999"]);
        let e = build_config(cli).unwrap_err();
        assert!(e.contains("key `proxy_protocol_listeners`"), "{e}");
    }

    #[test]
    fn bad_keepalive_flag_is_an_error() {
        let cli = Cli::parse_from(["ringmq", "--tcp-keepalive", "30,5"]);
        assert!(build_config(cli).is_err());
    }
}
