//! The operator's kit in `packaging/`: the systemd unit passes `systemd-analyze verify`, the
//! sample `ringmq.toml` names every key of `Config` and is accepted by `--check-config`, every
//! metric the Grafana dashboard queries exists on a running broker's `/metrics`; and the
//! `$SYS` topics carry Mosquitto's names.
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringmq::protocol::{ProtocolVersion, QoS};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringmq");

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(packaging(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("packaging-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The value of `key=` in the unit text (the first such line).
fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = read("ringmq.service");
    // The text as shipped.
    assert_eq!(
        directive(&unit, "ExecStart"),
        Some("/usr/bin/ringmq --config /etc/ringmq/ringmq.toml")
    );
    for (key, want) in [
        ("Restart", "on-failure"),
        ("LimitNOFILE", "1048576"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "ringmq"),
    ] {
        assert_eq!(directive(&unit, key), Some(want), "{key}=");
    }
    // io_uring must keep working: a syscall filter, if any, names the io_uring calls.
    for l in unit
        .lines()
        .filter(|l| l.trim().starts_with("SystemCallFilter="))
    {
        for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
            assert!(l.contains(call), "{l} leaves out {call}");
        }
    }
    // The sample configuration keeps its data in the unit's StateDirectory.
    assert!(read("ringmq.toml").contains("\ndata_dir = \"/var/lib/ringmq\"\n"));

    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing under CI (apt-get install systemd)"
        );
        eprintln!("SKIP: systemd-analyze not installed (apt-get install systemd)");
        return;
    };
    assert!(out.status.success());
    // `verify` checks that the binaries exist: a copy pointing at the binary cargo built.
    let dir = scratch("unit");
    let copy = dir.join("ringmq.service");
    std::fs::write(&copy, unit.replace("/usr/bin/ringmq", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {text}");
    // An unknown or misspelt key is only a warning (exit 0): none may name our unit.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ringmq.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns: {ours:#?}");
}

/// The key a line of the sample sets, active (`key = v`) or commented out (`#key = v`), or
/// the table it opens (`[t]`, `#[t]`).
fn sample_key(line: &str) -> Option<(bool, String)> {
    let (active, rest) = match line.strip_prefix('#') {
        Some(r) if r.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => (false, r),
        Some(_) => return None,
        None => (true, line),
    };
    if let Some(t) = rest.strip_prefix('[') {
        return Some((active, t.trim_end_matches(']').to_owned()));
    }
    let (k, _) = rest.split_once('=')?;
    Some((active, k.trim().to_owned()))
}

/// Field names of a struct deserialised with `deny_unknown_fields`, from serde's error for an
/// unknown key (`expected one of `a`, `b``).
fn fields_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(table: &str) -> Vec<String> {
    let e = toml::from_str::<T>(&format!("{table}no_such_key_zz = 1\n")).unwrap_err();
    let msg = e.message().to_owned();
    let list = msg
        .split_once("expected one of")
        .unwrap_or_else(|| panic!("{msg}"))
        .1;
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn sample_config_names_every_key_and_passes_check_config() {
    let text = read("ringmq.toml");
    // As written.
    let cfg = ringmq::config::Config::from_toml_str(&text).unwrap();
    cfg.validate().unwrap();
    let defaults = ringmq::config::Config::default();
    assert_eq!(cfg.max_packet_size, defaults.max_packet_size);
    assert_eq!(cfg.sys_interval_secs, defaults.sys_interval_secs);
    // With every optional setting uncommented, the examples parse too.
    let all: String = text
        .lines()
        .map(|l| match sample_key(l) {
            Some((false, _)) => &l[1..],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let full = ringmq::config::Config::from_toml_str(&all).unwrap_or_else(|e| panic!("{e}"));
    assert!(full.tcp_keepalive.is_some() && full.password_file.is_some());

    // Every field of Config and of its table, each once, with an explanation above it.
    let lines: Vec<&str> = text.lines().collect();
    let mut seen: Vec<String> = Vec::new();
    let mut table = String::new();
    for (i, l) in lines.iter().enumerate() {
        let Some((_, k)) = sample_key(l) else {
            continue;
        };
        let is_table = l.trim_start_matches('#').starts_with('[');
        let name = if is_table {
            table = format!("{k}.");
            k
        } else {
            format!("{table}{k}")
        };
        assert!(!seen.contains(&name), "{name} twice");
        if !is_table && table.is_empty() {
            let above = lines[i - 1];
            assert!(
                above.starts_with("# ") && sample_key(above).is_none(),
                "no explanation above {name}"
            );
        }
        seen.push(name);
    }
    let mut want = fields_of::<ringmq::config::Config>("");
    assert!(want.len() > 40, "{want:?}");
    want.extend(
        fields_of::<ringmq::config::TcpKeepalive>("")
            .into_iter()
            .map(|f| format!("tcp_keepalive.{f}")),
    );
    want.extend(
        fields_of::<ringmq::config::ClusterConfig>("")
            .into_iter()
            .map(|f| format!("cluster.{f}")),
    );
    let missing: Vec<&String> = want.iter().filter(|f| !seen.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "keys missing from ringmq.toml: {missing:?}"
    );
    let unknown: Vec<&String> = seen.iter().filter(|f| !want.contains(f)).collect();
    assert!(unknown.is_empty(), "not keys of Config: {unknown:?}");

    let out = Command::new(BIN)
        .args(["--check-config", "--config"])
        .arg(packaging("ringmq.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--check-config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

/// Every string in a JSON value under the key `expr`.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("ringmq_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &tail[end..];
    }
    names
}

/// `GET /metrics` over a plain HTTP/1.1 request.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // In two writes, as a client may: the endpoint must read the whole head.
    s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    s.write_all(format!("Host: {addr}\r\nAccept: text/plain\r\n\r\n").as_bytes())
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

#[test]
fn grafana_dashboard_queries_only_metrics_the_broker_exports() {
    let dash: serde_json::Value = serde_json::from_str(&read("grafana-ringmq.json")).unwrap();
    let mut queries = Vec::new();
    exprs(&dash, &mut queries);
    let used = metric_names(&queries.join("\n"));
    for must in [
        "ringmq_connections_current",
        "ringmq_sessions_current",
        "ringmq_publish_in",
        "ringmq_publish_out",
        "ringmq_takeovers",
        "ringmq_keepalive_expired",
        "ringmq_tls_handshakes",
        "ringmq_ws_handshakes",
        "ringmq_storage_commits",
        "ringmq_storage_commit_le_1ms",
        "ringmq_storage_errors",
        "ringmq_snapshots",
        "ringmq_queue_drops",
    ] {
        assert!(used.iter().any(|u| u == must), "no panel queries {must}");
    }

    // A running broker's /metrics.
    let dir = scratch("metrics");
    let log = dir.join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(rest) = text.split("metrics on http://").nth(1) {
            if let Some(a) = rest.split_once("/metrics") {
                break a.0.to_owned();
            }
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the broker did not start its metrics endpoint:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let body = scrape(&addr);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let exported: Vec<String> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(exported.len() > 40, "{body}");
    let missing: Vec<&String> = used.iter().filter(|u| !exported.contains(u)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics lacks: {missing:?}"
    );
}

/// The latest value of each `$SYS` topic seen, until `done` holds for them (or the deadline).
fn sys_until(
    raw: &mut Raw,
    seen: &mut std::collections::HashMap<String, String>,
    done: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(seen) {
        assert!(
            Instant::now() < deadline,
            "$SYS topics never satisfied the test: {seen:#?}"
        );
        if let Some(p) = recv_publish(raw, Duration::from_secs(2)) {
            seen.insert(
                p.topic.to_string(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            );
        }
    }
}

fn num(seen: &std::collections::HashMap<String, String>, t: &str) -> Option<f64> {
    seen.get(&format!("$SYS/broker/{t}"))?.parse().ok()
}

#[test]
fn sys_topics_have_mosquitto_names() {
    let broker = TestBroker::start_with(2, |c| c.sys_interval_secs = 1);
    let v = ProtocolVersion::V311;
    let (mut sub, _) = connect(broker.addr, connect_packet(v, "sys-watcher", 30, true));
    subscribe(&mut sub, 1, "$SYS/#", QoS::AtMostOnce);
    let (mut publ, _) = connect(broker.addr, connect_packet(v, "sys-publisher", 30, true));
    for i in 0..20 {
        publ.send(&publish("plain/topic", "x", QoS::AtMostOnce, i + 1));
    }
    let mut kept = publish("kept/topic", "r", QoS::AtMostOnce, 0);
    if let ringmq::protocol::Packet::Publish(p) = &mut kept {
        p.retain = true;
    }
    publ.send(&kept);
    let names = [
        "clients/connected",
        "clients/total",
        "clients/disconnected",
        "clients/maximum",
        "clients/expired",
        "messages/received",
        "messages/sent",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
        "bytes/received",
        "bytes/sent",
        "retained messages/count",
        "load/messages/received/1min",
        "load/messages/sent/5min",
        "load/publish/received/15min",
        "load/publish/sent/1min",
        "load/bytes/received/1min",
        "load/bytes/sent/1min",
        "load/connections/1min",
        "load/sockets/15min",
        // ringmq's own names, where Mosquitto has no such figure.
        "takeovers",
        "keepalive/expired",
        "connections/total",
    ];
    let mut seen = std::collections::HashMap::new();
    sys_until(&mut sub, &mut seen, |s| {
        names.iter().all(|t| num(s, t).is_some())
            && num(s, "clients/connected").is_some_and(|n| n >= 2.0)
            && num(s, "publish/messages/received").is_some_and(|n| n >= 21.0)
            && num(s, "load/publish/received/1min").is_some_and(|n| n > 0.0)
            && num(s, "retained messages/count").is_some_and(|n| n >= 1.0)
            && s.contains_key("$SYS/broker/uptime")
            && s.contains_key("$SYS/broker/version")
    });
    assert!(num(&seen, "clients/total").unwrap() >= 2.0);
    assert!(num(&seen, "messages/received").unwrap() >= 23.0);
    assert!(num(&seen, "bytes/received").unwrap() > 0.0);
    let uptime = &seen["$SYS/broker/uptime"];
    let secs = uptime.strip_suffix(" seconds").expect(uptime);
    secs.parse::<u64>().expect(uptime);
    assert!(seen["$SYS/broker/version"].starts_with("ringmq version "));
    for old in [
        "connections/current",
        "publish/in",
        "bytes/in",
        "packets/in",
    ] {
        assert!(
            !seen.contains_key(&format!("$SYS/broker/{old}")),
            "old name {old} still published"
        );
    }

    // A Mosquitto client reads the same names.
    if !have_mosquitto() {
        return;
    }
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
        .args([
            "-t",
            "$SYS/broker/clients/connected",
            "-t",
            "$SYS/broker/uptime",
        ])
        .args(["-v", "-C", "4", "-W", "30"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mosquitto_sub: {text}");
    // Retained values first, then fresh ones published while mosquitto_sub is connected.
    let connected: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("$SYS/broker/clients/connected "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(connected.len() >= 2, "{text}");
    assert!(connected.last().unwrap() >= &3, "{text}");
    assert!(text.contains("$SYS/broker/uptime "), "{text}");
}
