//! Command line (emqtt-bench flavoured).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ringmq-load",
    version,
    about = "io_uring MQTT load generator (ringmq, mosquitto, any MQTT broker)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Open and hold N connections (PINGREQ at the keep-alive).
    Conn(Common),
    /// N publishers, open-loop at --rate (total) or --interval-ms (per client).
    Pub(Common),
    /// N subscribers on --topic (with %i); measures latency of stamped payloads.
    Sub(Common),
    /// Publishers and subscribers in one process: --mode p2p|fanin|fanout.
    Pubsub(Common),
    /// Connect N, then N more with the same client ids at once; measure take-over.
    Takeover(Common),
    /// N clients with a will go silent; a watcher measures silence -> will arrival.
    Keepalive(Common),
    /// Tiny MQTT sink (accepts, acks, discards) to measure the generator's own ceiling.
    Sink(SinkArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SinkArgs {
    #[arg(long, default_value = "127.0.0.1:18899")]
    pub listen: String,
    /// Exit after this long.
    #[arg(long, short = 'd', default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
}

impl Scenario {
    pub fn common(&self) -> Option<&Common> {
        Some(match self {
            Scenario::Conn(c)
            | Scenario::Pub(c)
            | Scenario::Sub(c)
            | Scenario::Pubsub(c)
            | Scenario::Takeover(c)
            | Scenario::Keepalive(c) => c,
            Scenario::Sink(_) => return None,
        })
    }
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Conn(_) => "conn",
            Scenario::Pub(_) => "pub",
            Scenario::Sub(_) => "sub",
            Scenario::Pubsub(_) => "pubsub",
            Scenario::Takeover(_) => "takeover",
            Scenario::Keepalive(_) => "keepalive",
            Scenario::Sink(_) => "sink",
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// pub i -> sub i on topic %i (--clients pairs)
    P2p,
    /// --clients publishers -> one shared subscription group ($share/g/...) of --subs members
    Fanin,
    /// 1 publisher -> --clients subscribers
    Fanout,
}

/// Where clients go when `--host` is given more than once.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Round-robin, and the second member of a pair (pubsub p2p's publisher i, takeover's
    /// new connection i) on the host after its first member's: every pair crosses nodes.
    Cross,
    /// Round-robin over all clients in plan order.
    Spread,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Broker host, repeatable (e.g. every node of a cluster). May carry :port. The summary
    /// then has a line per host.
    #[arg(long = "host", short = 'H', default_value = "127.0.0.1")]
    pub hosts: Vec<String>,
    /// With several --host: cross (pairs cross hosts) or spread (plain round-robin).
    #[arg(long, value_enum, default_value_t = Placement::Cross)]
    pub placement: Placement,
    #[arg(long, short = 'p', default_value_t = 1883)]
    pub port: u16,
    /// Number of clients (pairs for pubsub p2p).
    #[arg(long, short = 'c', default_value_t = 10)]
    pub clients: u32,
    /// Connection rate (connections/s, whole process); 0 = as fast as possible.
    #[arg(long, default_value_t = 1000.0)]
    pub ramp: f64,
    /// Keep-alive in seconds sent in CONNECT.
    #[arg(long, short = 'k', default_value_t = 60)]
    pub keepalive: u16,
    #[arg(long, short = 'q', default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (minimum 16: the latency stamp; 24 and up carry the full stamp).
    #[arg(long, short = 's', default_value_t = 64)]
    pub size: usize,
    /// Total publish rate (msgs/s, open loop). Overrides --interval-ms.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Per-publisher interval in ms (used when --rate is absent).
    #[arg(long, short = 'I', default_value_t = 1000.0)]
    pub interval_ms: f64,
    /// Topic template, %i = client index.
    #[arg(long, short = 't', default_value = "bench/%i")]
    pub topic: String,
    /// Client id prefix (client id = prefix + index).
    #[arg(long, default_value = "rmqload-")]
    pub prefix: String,
    #[arg(long, default_value_t = 0)]
    pub start_index: u32,
    /// MQTT version: 3 / 3.1.1 / 4 or 5.
    #[arg(long, short = 'V', default_value = "5", value_parser = parse_version)]
    pub version: crate::wire::Version,
    /// Clean start / clean session (default true; --clean false for persistent sessions).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub clean: bool,
    /// v5 Session Expiry Interval (seconds).
    #[arg(long)]
    pub session_expiry: Option<u32>,
    /// Source addresses: range 127.0.0.2-127.0.0.50 and/or comma list.
    #[arg(long, value_parser = parse_sources)]
    pub source: Option<Sources>,
    /// Generator threads (one io_uring each).
    #[arg(long, short = 'T', default_value_t = 1)]
    pub threads: u32,
    /// Total run time (hard bound), e.g. 10s, 500ms, 2m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Wait this long after the last SUBACK before publishing (subscriptions reach the other
    /// nodes of a cluster asynchronously).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Extra time after publishing stops to wait for in-flight messages.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Stop publishing after this many messages (whole process).
    #[arg(long)]
    pub count: Option<u64>,
    /// Seed (client order shuffle for source addresses; reserved for random payloads).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the summary as JSON to FILE.
    #[arg(long)]
    pub json: Option<String>,
    /// pubsub mode.
    #[arg(long, value_enum, default_value_t = Mode::P2p)]
    pub mode: Mode,
    /// Shared-subscription members for fanin.
    #[arg(long, default_value_t = 1)]
    pub subs: u32,
    /// conn: reconnect when a connection drops.
    #[arg(long, default_value_t = false)]
    pub reconnect: bool,
    /// Retain flag on publishes.
    #[arg(long, default_value_t = false)]
    pub retain: bool,
    /// keepalive scenario: will topic template.
    #[arg(long, default_value = "bench/will/%i")]
    pub will_topic: String,
    /// Quiet: no live line.
    #[arg(long, default_value_t = false)]
    pub quiet: bool,
}

pub fn parse_version(s: &str) -> Result<crate::wire::Version, String> {
    match s {
        "3" | "3.1.1" | "4" | "311" => Ok(crate::wire::Version::V311),
        "5" | "5.0" => Ok(crate::wire::Version::V5),
        _ => Err(format!("unsupported MQTT version {s:?} (use 3.1.1 or 5)")),
    }
}

/// "10s", "250ms", "2m", "1h", "1.5s", bare number = seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    if !v.is_finite() || v < 0.0 || v * mul > 1e7 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<IpAddr>);

/// "127.0.0.2-127.0.0.50", "10.0.0.1,10.0.0.2", "127.0.0.2-127.0.0.4,::1".
pub fn parse_sources(s: &str) -> Result<Sources, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("bad source {a:?}"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("bad source {b:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 1 << 20 {
                return Err(format!("bad source range {part:?}"));
            }
            out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(part.parse().map_err(|_| format!("bad source {part:?}"))?);
        }
    }
    if out.is_empty() {
        return Err("empty source list".into());
    }
    Ok(Sources(out))
}

/// Expand %i in a topic/client template.
pub fn expand(template: &str, i: u32) -> String {
    if template.contains("%i") {
        template.replace("%i", &i.to_string())
    } else {
        template.to_string()
    }
}

/// Turn a topic template into a filter matching every index (%i -> +).
pub fn wildcard(template: &str) -> String {
    template.replace("%i", "+")
}

/// Resolve --host values (each may carry its own :port) to socket addresses.
pub fn resolve_hosts(hosts: &[String], port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for h in hosts {
        let with_port = match h.parse::<IpAddr>() {
            // bare v4/v6 literal
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            // host:port or [v6]:port
            Err(_) if (h.matches(':').count() == 1 && !h.starts_with('[')) || h.contains("]:") => {
                h.clone()
            }
            Err(_) => format!("{h}:{port}"),
        };
        let a = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {h}: {e}"))?
            .next()
            .ok_or_else(|| format!("no address for {h}"))?;
        out.push(a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sources() {
        let s = parse_sources("127.0.0.2-127.0.0.5").unwrap();
        assert_eq!(s.0.len(), 4);
        assert_eq!(s.0[0], "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(s.0[3], "127.0.0.5".parse::<IpAddr>().unwrap());
        let s = parse_sources("127.0.0.9, 127.0.0.1-127.0.0.2,::1").unwrap();
        assert_eq!(s.0.len(), 4);
        assert_eq!(s.0[3], "::1".parse::<IpAddr>().unwrap());
        assert!(parse_sources("127.0.0.5-127.0.0.2").is_err());
        assert!(parse_sources("nope").is_err());
        assert!(parse_sources(",").is_err());
    }

    #[test]
    fn topic_template() {
        assert_eq!(expand("bench/%i/x", 42), "bench/42/x");
        assert_eq!(expand("fixed", 3), "fixed");
        assert_eq!(wildcard("bench/%i"), "bench/+");
    }

    #[test]
    fn hosts() {
        let h = resolve_hosts(
            &["127.0.0.1".into(), "127.0.0.2:1999".into(), "::1".into()],
            1883,
        )
        .unwrap();
        assert_eq!(h[0], "127.0.0.1:1883".parse().unwrap());
        assert_eq!(h[1], "127.0.0.2:1999".parse().unwrap());
        assert_eq!(h[2], "[::1]:1883".parse().unwrap());
    }

    #[test]
    fn cli_contract_parses() {
        let c = Cli::try_parse_from([
            "ringmq-load",
            "pubsub",
            "--host",
            "127.0.0.1",
            "--port",
            "1884",
            "--clients",
            "5",
            "--rate",
            "1000",
            "--duration",
            "10s",
            "--json",
            "out.json",
            "--mode",
            "fanin",
            "--subs",
            "3",
            "--version",
            "3.1.1",
            "--source",
            "127.0.0.2-127.0.0.3",
            "--qos",
            "1",
        ])
        .unwrap();
        let Scenario::Pubsub(o) = &c.scenario else {
            panic!("wrong scenario")
        };
        assert_eq!(o.port, 1884);
        assert_eq!(o.clients, 5);
        assert_eq!(o.rate, Some(1000.0));
        assert_eq!(o.mode, Mode::Fanin);
        assert_eq!(o.subs, 3);
        assert_eq!(o.version, crate::wire::Version::V311);
        assert_eq!(o.source.as_ref().unwrap().0.len(), 2);
        assert_eq!(o.json.as_deref(), Some("out.json"));
        assert!(Cli::try_parse_from(["ringmq-load", "pub", "--qos", "3"]).is_err());
    }
}
