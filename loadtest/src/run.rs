//! Scenario setup, the control loop (phases, live line, hard stop) and the summary.

use crate::opts::{expand, resolve_hosts, wildcard, Common, Mode, Placement, Scenario};
use crate::stamp::now_ns;
use crate::stats::{Shared, StreamKey, ThreadResult};
use crate::worker::{reserve_fd_table, ClientSpec, Config, Role, Worker, FDS_PER_WORKER};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Result of a run (also written with --json).
#[derive(Debug, Clone)]
pub struct Report {
    pub exit_code: i32,
    pub json: Value,
    pub connects: u64,
    pub conns_peak: i64,
    pub connect_errors: u64,
    pub sent: u64,
    pub recv: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
}

/// Receive-stream group shared by all members of a $share group.
pub const SHARED_GROUP: u32 = u32::MAX;

pub struct Plan {
    pub specs: Vec<ClientSpec>,
    /// (stream key) -> publisher id whose sent count is expected on it
    pub expected: Vec<StreamKey>,
    /// receipts expected per published message (for the drain phase)
    pub fan: u64,
    pub n_subs: u64,
    pub n_pubs: u64,
    pub n_old: u64,
    /// The `--host` addresses, in order (`ClientSpec::host` indexes them).
    pub hosts: Vec<SocketAddr>,
}

pub fn plan(sc: &Scenario) -> Result<Plan, String> {
    let o = sc.common().ok_or("no common options")?;
    let hosts = resolve_hosts(&o.hosts, o.port)?;
    let sources = o.source.as_ref().map(|s| s.0.clone()).unwrap_or_default();
    let n = o.clients;
    let base = o.start_index;
    // The host of each role where it is not plain round-robin: (index in `roles`, host).
    let mut placed: HashMap<usize, usize> = HashMap::new();
    let mut roles: Vec<(String, Role)> = Vec::new(); // (client id suffix, role)
    let cross = usize::from(o.placement == Placement::Cross && hosts.len() > 1);
    let mut expected = Vec::new();
    let mut fan = 0;
    let id = |k: u32| format!("{}{}", o.prefix, k);
    match sc {
        Scenario::Conn(_) => (0..n).for_each(|i| roles.push((id(base + i), Role::Idle))),
        Scenario::Pub(_) => (0..n).for_each(|i| {
            roles.push((
                format!("{}p{}", o.prefix, base + i),
                Role::Pub {
                    topic: expand(&o.topic, base + i),
                },
            ))
        }),
        Scenario::Sub(_) => (0..n).for_each(|i| {
            roles.push((
                format!("{}s{}", o.prefix, base + i),
                Role::Sub {
                    filter: expand(&o.topic, base + i),
                    group: i,
                },
            ))
        }),
        Scenario::Pubsub(_) => match o.mode {
            Mode::P2p => {
                fan = 1;
                for i in 0..n {
                    roles.push((
                        format!("{}s{}", o.prefix, base + i),
                        Role::Sub {
                            filter: expand(&o.topic, base + i),
                            group: i,
                        },
                    ));
                }
                for i in 0..n {
                    placed.insert(roles.len(), (i as usize + cross) % hosts.len());
                    roles.push((
                        format!("{}p{}", o.prefix, base + i),
                        Role::Pub {
                            topic: expand(&o.topic, base + i),
                        },
                    ));
                    expected.push((i, n + i));
                }
            }
            Mode::Fanin => {
                fan = 1;
                let s = o.subs.max(1);
                let filter = format!("$share/g/{}", wildcard(&o.topic));
                for j in 0..s {
                    roles.push((
                        format!("{}s{}", o.prefix, base + j),
                        Role::Sub {
                            filter: filter.clone(),
                            group: SHARED_GROUP,
                        },
                    ));
                }
                for i in 0..n {
                    roles.push((
                        format!("{}p{}", o.prefix, base + i),
                        Role::Pub {
                            topic: expand(&o.topic, base + i),
                        },
                    ));
                    expected.push((SHARED_GROUP, s + i));
                }
            }
            Mode::Fanout => {
                fan = n as u64;
                let t = expand(&o.topic, base);
                for j in 0..n {
                    roles.push((
                        format!("{}s{}", o.prefix, base + j),
                        Role::Sub {
                            filter: t.clone(),
                            group: j,
                        },
                    ));
                    expected.push((j, n));
                }
                roles.push((format!("{}p{}", o.prefix, base), Role::Pub { topic: t }));
            }
        },
        Scenario::Takeover(_) => {
            (0..n).for_each(|i| roles.push((id(base + i), Role::Old)));
            for i in 0..n {
                placed.insert(roles.len(), (i as usize + cross) % hosts.len());
                roles.push((id(base + i), Role::New));
            }
        }
        Scenario::Keepalive(_) => {
            roles.push((
                format!("{}watch", o.prefix),
                Role::Watcher {
                    filter: wildcard(&o.will_topic),
                },
            ));
            (0..n).for_each(|i| {
                roles.push((
                    id(base + i),
                    Role::Silent {
                        will_topic: expand(&o.will_topic, base + i),
                    },
                ))
            });
        }
        Scenario::Sink(_) => return Err("sink has no plan".into()),
    }
    let mut p = Plan {
        specs: Vec::new(),
        expected,
        fan,
        n_subs: 0,
        n_pubs: 0,
        n_old: 0,
        hosts: hosts.clone(),
    };
    for (k, (cid, role)) in roles.into_iter().enumerate() {
        match role {
            Role::Sub { .. } | Role::Watcher { .. } => p.n_subs += 1,
            Role::Pub { .. } => p.n_pubs += 1,
            Role::Old => p.n_old += 1,
            _ => {}
        }
        let k32 = k as u32;
        let host = placed.get(&k).copied().unwrap_or(k % hosts.len());
        p.specs.push(ClientSpec {
            idx: k32,
            client_id: cid,
            role,
            addr: hosts[host],
            host,
            source: if sources.is_empty() {
                None
            } else {
                Some(sources[k % sources.len()])
            },
        });
    }
    Ok(p)
}

fn pct(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

fn hist_json(prefix: &str, h: &Histogram<u64>, m: &mut serde_json::Map<String, Value>) {
    m.insert(format!("{prefix}_count"), json!(h.len()));
    m.insert(format!("{prefix}_p50_us"), json!(pct(h, 0.5)));
    m.insert(format!("{prefix}_p90_us"), json!(pct(h, 0.9)));
    m.insert(format!("{prefix}_p99_us"), json!(pct(h, 0.99)));
    m.insert(format!("{prefix}_p999_us"), json!(pct(h, 0.999)));
    m.insert(
        format!("{prefix}_max_us"),
        json!(if h.is_empty() { 0 } else { h.max() }),
    );
    m.insert(
        format!("{prefix}_mean_us"),
        json!(if h.is_empty() { 0.0 } else { h.mean() }),
    );
}

fn hist_line(name: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("{name:<12} (none)");
    }
    format!(
        "{name:<12} n={} p50={}us p90={}us p99={}us p999={}us max={}us",
        h.len(),
        pct(h, 0.5),
        pct(h, 0.9),
        pct(h, 0.99),
        pct(h, 0.999),
        h.max()
    )
}

pub fn run(sc: &Scenario) -> Result<Report, String> {
    let o: &Common = sc.common().ok_or("not a load scenario")?;
    let p = plan(sc)?;
    let hosts = &p.hosts;
    let threads = o.threads.max(1) as usize;
    let mut per: Vec<Vec<ClientSpec>> = vec![Vec::new(); threads];
    for s in &p.specs {
        per[s.idx as usize % threads].push(s.clone());
    }
    let total_rate = match o.rate {
        Some(r) => r,
        None if o.interval_ms > 0.0 => p.n_pubs as f64 * 1000.0 / o.interval_ms,
        None => 0.0,
    };
    // Before any generator thread exists (see `reserve_fd_table`).
    reserve_fd_table(threads * FDS_PER_WORKER);
    let sh = Arc::new(Shared::default());
    let start = now_ns();
    let dur_ns = o.duration.as_nanos() as u64;
    let deadline = start + dur_ns;
    sh.pub_end_ns.store(deadline, Relaxed);
    let (tx, rx) = mpsc::channel::<ThreadResult>();
    let mut handles = Vec::new();
    let mut remotes = Vec::new();
    let mut count_left = o.count;
    let mut pubs_left = p.n_pubs;
    for (t, specs) in per.into_iter().enumerate() {
        let local_pubs = specs
            .iter()
            .filter(|s| matches!(s.role, Role::Pub { .. }))
            .count() as u64;
        let share = if p.n_pubs > 0 {
            local_pubs as f64 / p.n_pubs as f64
        } else {
            0.0
        };
        let count = count_left.map(|c| {
            let mine = if pubs_left <= local_pubs {
                c
            } else {
                c * local_pubs / pubs_left.max(1)
            };
            count_left = Some(c - mine);
            mine
        });
        pubs_left -= local_pubs;
        let cfg = Config {
            version: o.version,
            keepalive: o.keepalive,
            qos: o.qos,
            size: o.size,
            clean: o.clean,
            session_expiry: o.session_expiry,
            retain: o.retain,
            reconnect: o.reconnect,
            ramp: o.ramp / threads as f64,
            rate: total_rate * share,
            count,
            late_ns: 1_000_000,
            hosts: hosts.len(),
        };
        let w = Worker::new(specs, cfg, sh.clone())?;
        remotes.extend(w.remote());
        let tx = tx.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || {
                    w.run(tx);
                })
                .map_err(|e| e.to_string())?,
        );
    }
    drop(tx);

    // SIGINT / SIGTERM end the run early with the usual summary and JSON (scripts that hold
    // connections for a measured time stop the generator this way).
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone()).map_err(|e| e.to_string())?;
    }

    // Control loop: phases + live line.
    let mut last_tick = start;
    let mut last = (0u64, 0u64, 0u64);
    let mut pub_started = 0u64;
    let half = start + dur_ns / 2;
    let drain_ns = o.drain.as_nanos() as u64;
    let needs_drain = p.fan > 0;
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = now_ns();
        if pub_started == 0
            && p.n_pubs > 0
            && ((sh.subs_ready.load(Relaxed) + sh.sub_errors.load(Relaxed) >= p.n_subs
                && sh.pubs_up.load(Relaxed) >= p.n_pubs)
                || now >= half)
        {
            pub_started = now + 1_000_000 + o.settle.as_nanos() as u64;
            sh.pub_start_ns.store(pub_started, Relaxed);
        }
        if p.n_old > 0
            && !sh.phase2.load(Relaxed)
            && (sh.old_up.load(Relaxed) >= p.n_old || now >= half)
        {
            sh.phase2.store(true, Relaxed);
        }
        if now - last_tick >= 1_000_000_000 && !o.quiet {
            let c = (
                Shared::get(&sh.connects),
                Shared::get(&sh.sent),
                Shared::get(&sh.recv),
            );
            let secs = (now - last_tick) as f64 / 1e9;
            eprintln!(
                "[{:>5.1}s] conns={} conn/s={:.0} pub/s={:.0} recv/s={:.0} err(conn={} connack={} proto={}) late={} skipped={}",
                (now - start) as f64 / 1e9,
                sh.conns.load(Relaxed),
                (c.0 - last.0) as f64 / secs,
                (c.1 - last.1) as f64 / secs,
                (c.2 - last.2) as f64 / secs,
                Shared::get(&sh.connect_errors),
                Shared::get(&sh.connack_errors),
                Shared::get(&sh.errors),
                Shared::get(&sh.late),
                Shared::get(&sh.skipped),
            );
            last = c;
            last_tick = now;
        }
        if interrupted.load(Relaxed) {
            eprintln!("interrupted: stopping early");
            break;
        }
        if now >= deadline {
            let sent = Shared::get(&sh.sent);
            // Every receipt, and at QoS 1/2 every publisher ack too (the last PUBACK can
            // arrive after the subscriber got the message).
            let all_in = Shared::get(&sh.recv_stamped) >= sent * p.fan
                && (o.qos == 0 || Shared::get(&sh.acked) >= sent);
            if !needs_drain || all_in || now >= deadline + drain_ns {
                break;
            }
        }
    }
    let end = now_ns();
    sh.stop.store(true, Relaxed);
    for r in &remotes {
        r.wake();
    }
    // Hard stop: a hung thread (it should not: every wait is bounded) does not block the report.
    let mut res = ThreadResult::new();
    let mut got = 0;
    let hard = std::time::Instant::now() + Duration::from_secs(3);
    while got < handles.len() {
        let left = hard.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => {
                res.merge(r);
                got += 1;
            }
            Err(_) => {
                eprintln!(
                    "WARNING: {} generator thread(s) did not stop in time; partial results",
                    handles.len() - got
                );
                break;
            }
        }
    }
    if got == handles.len() {
        for h in handles {
            let _ = h.join();
        }
    }
    res.fold_hosts();

    // Loss accounting.
    let sent_map: HashMap<u32, u64> = res.sent_per_pub.iter().copied().collect();
    let (mut lost, mut expected_total, mut unexpected) = (0u64, 0u64, 0u64);
    let duplicates: u64 = res.tracks.values().map(|t| t.dups).sum();
    if p.expected.is_empty() {
        // stand-alone sub: sequence gaps
        for t in res.tracks.values() {
            let span = t.max_seq.map_or(0, |m| m + 1);
            expected_total += span;
            lost += span.saturating_sub(t.unique);
        }
    } else {
        for k in &p.expected {
            let s = sent_map.get(&k.1).copied().unwrap_or(0);
            expected_total += s;
            let u = res.tracks.get(k).map_or(0, |t| t.unique);
            lost += s.saturating_sub(u);
        }
        let exp: std::collections::HashSet<_> = p.expected.iter().collect();
        unexpected = res
            .tracks
            .iter()
            .filter(|(k, _)| !exp.contains(k))
            .map(|(_, t)| t.unique)
            .sum();
    }
    let sent = Shared::get(&sh.sent);
    let recv = Shared::get(&sh.recv_stamped);
    let late = Shared::get(&sh.late);
    let pub_window = if pub_started > 0 {
        deadline.min(end).saturating_sub(pub_started) as f64 / 1e9
    } else {
        0.0
    };
    let wall = (end - start) as f64 / 1e9;
    // rates over the publish window; stand-alone `sub` has none: use the wall time
    let rate = |n: u64| {
        if pub_window > 0.0 {
            n as f64 / pub_window
        } else if wall > 0.0 {
            n as f64 / wall
        } else {
            0.0
        }
    };

    let mut m = serde_json::Map::new();
    m.insert("scenario".into(), json!(sc.name()));
    m.insert("mode".into(), json!(format!("{:?}", o.mode).to_lowercase()));
    m.insert("clients".into(), json!(o.clients));
    m.insert("connections_planned".into(), json!(p.specs.len()));
    m.insert("threads".into(), json!(threads));
    m.insert("qos".into(), json!(o.qos));
    m.insert("size".into(), json!(o.size.max(crate::stamp::MIN_PAYLOAD)));
    m.insert(
        "mqtt_version".into(),
        json!(if o.version == crate::wire::Version::V5 {
            "5"
        } else {
            "3.1.1"
        }),
    );
    m.insert("wall_s".into(), json!(wall));
    m.insert("publish_window_s".into(), json!(pub_window));
    m.insert("target_rate".into(), json!(total_rate));
    m.insert("connects".into(), json!(Shared::get(&sh.connects)));
    m.insert("conns_peak".into(), json!(sh.conns_peak.load(Relaxed)));
    // CONNECT+CONNACK rate: successful connects over the time from the first connect attempt
    // to the last CONNACK (a whole-run figure, so a ramp limit caps it).
    let (c0, c1) = (
        sh.first_connect_ns.load(Relaxed),
        sh.last_connack_ns.load(Relaxed),
    );
    let connect_window = if c0 > 0 && c1 > c0 {
        (c1 - c0) as f64 / 1e9
    } else {
        0.0
    };
    m.insert("connect_window_s".into(), json!(connect_window));
    m.insert(
        "connect_rate".into(),
        json!(if connect_window > 0.0 {
            Shared::get(&sh.connects) as f64 / connect_window
        } else {
            0.0
        }),
    );
    m.insert("conns_end".into(), json!(sh.conns.load(Relaxed)));
    m.insert(
        "connect_errors".into(),
        json!(Shared::get(&sh.connect_errors)),
    );
    m.insert(
        "connack_errors".into(),
        json!(Shared::get(&sh.connack_errors)),
    );
    m.insert(
        "subscribe_errors".into(),
        json!(Shared::get(&sh.sub_errors)),
    );
    m.insert("protocol_errors".into(), json!(Shared::get(&sh.errors)));
    m.insert("closed".into(), json!(Shared::get(&sh.closed)));
    m.insert("reconnects".into(), json!(Shared::get(&sh.reconnects)));
    m.insert("pings".into(), json!(Shared::get(&sh.pings)));
    m.insert("pongs".into(), json!(Shared::get(&sh.pongs)));
    m.insert("sent".into(), json!(sent));
    m.insert("sent_rate".into(), json!(rate(sent)));
    m.insert("acked".into(), json!(Shared::get(&sh.acked)));
    m.insert(
        "acked_no_subscribers".into(),
        json!(Shared::get(&sh.no_subscribers)),
    );
    m.insert("acked_refused".into(), json!(Shared::get(&sh.ack_refused)));
    m.insert(
        "skipped_not_connected".into(),
        json!(Shared::get(&sh.skipped)),
    );
    m.insert("late_sends".into(), json!(late));
    m.insert("max_send_lag_us".into(), json!(res.max_late_ns / 1000));
    m.insert("received".into(), json!(recv));
    m.insert("recv_rate".into(), json!(rate(recv)));
    m.insert("expected".into(), json!(expected_total));
    m.insert("lost".into(), json!(lost));
    m.insert("duplicates".into(), json!(duplicates));
    m.insert("reordered".into(), json!(res.reordered));
    m.insert("unexpected".into(), json!(unexpected));
    hist_json("latency", &res.lat, &mut m);
    hist_json("connect", &res.connect_lat, &mut m);
    if matches!(sc, Scenario::Takeover(_)) {
        hist_json("takeover", &res.takeover_lat, &mut m);
        m.insert(
            "old_disconnect_0x8e".into(),
            json!(Shared::get(&sh.disc_8e)),
        );
        m.insert(
            "old_disconnect_other".into(),
            json!(Shared::get(&sh.disc_other)),
        );
        m.insert(
            "old_eof_without_disconnect".into(),
            json!(Shared::get(&sh.old_eof)),
        );
    }
    if matches!(sc, Scenario::Keepalive(_)) {
        hist_json("will", &res.will_lat, &mut m);
        m.insert("wills_received".into(), json!(Shared::get(&sh.wills)));
        m.insert(
            "silent_closed_by_broker".into(),
            json!(Shared::get(&sh.ka_closed)),
        );
    }
    m.insert("first_error".into(), json!(res.first_error));
    // Per host (a cluster's nodes): where the clients connected, what its publishers sent and
    // its subscribers received.
    let per_host: Vec<Value> = hosts
        .iter()
        .zip(&res.hosts)
        .map(|(a, h)| {
            let mut hm = serde_json::Map::new();
            hm.insert("host".into(), json!(a.to_string()));
            hm.insert("connects".into(), json!(h.connects));
            hm.insert("connect_rate".into(), json!(h.connect_rate()));
            hm.insert("connect_errors".into(), json!(h.connect_errors));
            hm.insert("connack_errors".into(), json!(h.connack_errors));
            hm.insert("closed".into(), json!(h.closed));
            hm.insert("sent".into(), json!(h.sent));
            hm.insert("received".into(), json!(h.recv));
            hm.insert("recv_rate".into(), json!(rate(h.recv)));
            hist_json("latency", &h.lat, &mut hm);
            hist_json("connect", &h.connect_lat, &mut hm);
            if matches!(sc, Scenario::Takeover(_)) {
                hist_json("takeover", &h.takeover_lat, &mut hm);
            }
            Value::Object(hm)
        })
        .collect();
    m.insert("hosts".into(), Value::Array(per_host));

    // Text summary.
    eprintln!("---- ringmq-load {} summary ----", sc.name());
    eprintln!(
        "connections: planned={} connects={} peak={} end={} connect_errors={} connack_errors={} closed={} reconnects={}",
        p.specs.len(),
        Shared::get(&sh.connects),
        sh.conns_peak.load(Relaxed),
        sh.conns.load(Relaxed),
        Shared::get(&sh.connect_errors),
        Shared::get(&sh.connack_errors),
        Shared::get(&sh.closed),
        Shared::get(&sh.reconnects)
    );
    eprintln!("{}", hist_line("connect", &res.connect_lat));
    if let (Some(w), Some(r)) = (m["connect_window_s"].as_f64(), m["connect_rate"].as_f64()) {
        if w > 0.0 {
            eprintln!("connect rate: {r:.0} CONNACKs/s (first connect to last CONNACK: {w:.2} s)");
        }
    }
    if p.n_pubs > 0 || recv > 0 {
        eprintln!(
            "publish: sent={} ({:.0}/s, target {:.0}/s) acked={} (0x10 no subscribers={} refused={}) skipped={} late={} max_lag={}us",
            sent,
            rate(sent),
            total_rate,
            Shared::get(&sh.acked),
            Shared::get(&sh.no_subscribers),
            Shared::get(&sh.ack_refused),
            Shared::get(&sh.skipped),
            late,
            res.max_late_ns / 1000
        );
        eprintln!(
            "receive: recv={} ({:.0}/s) expected={} lost={} dup={} reordered={} unexpected={}",
            recv,
            rate(recv),
            expected_total,
            lost,
            duplicates,
            res.reordered,
            unexpected
        );
        eprintln!("{}", hist_line("latency", &res.lat));
    }
    if matches!(sc, Scenario::Takeover(_)) {
        eprintln!("{}", hist_line("takeover", &res.takeover_lat));
        eprintln!(
            "old sessions: DISCONNECT 0x8E={} other DISCONNECT={} EOF without DISCONNECT={}",
            Shared::get(&sh.disc_8e),
            Shared::get(&sh.disc_other),
            Shared::get(&sh.old_eof)
        );
    }
    if matches!(sc, Scenario::Keepalive(_)) {
        eprintln!("{}", hist_line("will", &res.will_lat));
        eprintln!(
            "wills received={} silent clients closed by broker={}",
            Shared::get(&sh.wills),
            Shared::get(&sh.ka_closed)
        );
    }
    if hosts.len() > 1 {
        for (a, h) in hosts.iter().zip(&res.hosts) {
            let mut line = format!(
                "host {a}: connects={} ({:.0} CONNACKs/s) connect_errors={} connack_errors={} closed={} sent={} recv={} ({:.0}/s)",
                h.connects,
                h.connect_rate(),
                h.connect_errors,
                h.connack_errors,
                h.closed,
                h.sent,
                h.recv,
                rate(h.recv),
            );
            if !h.lat.is_empty() {
                line += &format!(
                    " latency p50={}us p99={}us",
                    pct(&h.lat, 0.5),
                    pct(&h.lat, 0.99)
                );
            }
            if !h.takeover_lat.is_empty() {
                line += &format!(
                    " takeover p50={}us p99={}us",
                    pct(&h.takeover_lat, 0.5),
                    pct(&h.takeover_lat, 0.99)
                );
            }
            eprintln!("{line}");
        }
    }
    if let Some(e) = &res.first_error {
        eprintln!("first error: {e}");
    }
    let mut exit_code = 0;
    if sent > 0 && late * 100 > sent {
        eprintln!(
            "!!!!! WARNING: THE GENERATOR FELL BEHIND: {late} of {sent} sends were more than 1 ms late \
             (max lag {} us). Latency includes generator lag. Use more --threads or a lower --rate. !!!!!",
            res.max_late_ns / 1000
        );
    }
    if o.qos >= 1 && lost > 0 {
        eprintln!("ERROR: {lost} messages lost at QoS {}", o.qos);
        exit_code = 2;
    }
    let json = Value::Object(m);
    if let Some(f) = &o.json {
        std::fs::write(
            f,
            serde_json::to_string_pretty(&json).unwrap_or_default() + "\n",
        )
        .map_err(|e| format!("write {f}: {e}"))?;
    }
    Ok(Report {
        exit_code,
        json,
        connects: Shared::get(&sh.connects),
        conns_peak: sh.conns_peak.load(Relaxed),
        connect_errors: Shared::get(&sh.connect_errors),
        sent,
        recv,
        lost,
        duplicates,
        late,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opts::Cli;
    use clap::Parser;

    fn specs(args: &[&str]) -> Vec<ClientSpec> {
        let mut v = vec!["ringmq-load"];
        v.extend_from_slice(args);
        plan(&Cli::try_parse_from(v).unwrap().scenario)
            .unwrap()
            .specs
    }

    const HOSTS: [&str; 6] = [
        "--host",
        "127.0.0.1:1001",
        "--host",
        "127.0.0.1:1002",
        "--host",
        "127.0.0.1:1003",
    ];

    #[test]
    fn cross_placement_puts_every_pair_on_two_hosts() {
        let mut a = vec!["pubsub", "--mode", "p2p", "--clients", "6"];
        a.extend_from_slice(&HOSTS);
        let s = specs(&a);
        let host_of = |id: &str| s.iter().find(|c| c.client_id == id).unwrap().host;
        for i in 0..6 {
            let (sub, publ) = (
                host_of(&format!("rmqload-s{i}")),
                host_of(&format!("rmqload-p{i}")),
            );
            assert_ne!(sub, publ, "pair {i} on one host");
            assert_eq!(publ, (sub + 1) % 3);
        }
        // Every host gets its share of clients.
        for h in 0..3 {
            assert_eq!(s.iter().filter(|c| c.host == h).count(), 4);
        }
        let mut a = vec!["takeover", "--clients", "6"];
        a.extend_from_slice(&HOSTS);
        let s = specs(&a);
        for i in 0..6 {
            let id = format!("rmqload-{i}");
            let both: Vec<_> = s.iter().filter(|c| c.client_id == id).collect();
            assert!(matches!(both[0].role, Role::Old) && matches!(both[1].role, Role::New));
            assert_ne!(both[0].host, both[1].host, "take-over {i} on one host");
            assert_eq!(
                both[0].addr,
                resolve_hosts(&[HOSTS[1 + 2 * both[0].host].into()], 0).unwrap()[0]
            );
        }
    }

    #[test]
    fn spread_placement_is_round_robin() {
        let mut a = vec!["takeover", "--clients", "6", "--placement", "spread"];
        a.extend_from_slice(&HOSTS);
        for (k, c) in specs(&a).iter().enumerate() {
            assert_eq!(c.host, k % 3);
        }
        // One host: everything there, whatever the placement.
        for c in specs(&["pubsub", "--clients", "4"]) {
            assert_eq!(c.host, 0);
        }
    }
}
