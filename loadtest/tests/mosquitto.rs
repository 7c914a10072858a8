//! Scenario logic against a real broker: mosquitto started by the test on a free port.
//! Skipped (with a message) if the mosquitto binary is not installed.

use clap::Parser;
use ringmq_load::opts::Cli;
use ringmq_load::run::run;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Broker {
    child: Child,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_bin() -> Option<String> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/local/bin/mosquitto",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(|s| s.to_string())
}

fn start_broker() -> Option<Broker> {
    let Some(bin) = mosquitto_bin() else {
        eprintln!("SKIPPED: mosquitto binary not found (apt-get install -y mosquitto)");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(bin)
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto");
    let b = Broker { child, port };
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(b);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mosquitto did not start listening on {port}");
}

fn cli(args: &str) -> Cli {
    Cli::try_parse_from(std::iter::once("ringmq-load").chain(args.split_whitespace()))
        .expect("valid args")
}

#[test]
fn conn_50_clients_against_mosquitto() {
    let Some(b) = start_broker() else { return };
    let c = cli(&format!(
        "conn --host 127.0.0.1 --port {} --clients 50 --ramp 500 --keepalive 1 --duration 2s --threads 2 --quiet",
        b.port
    ));
    let r = run(&c.scenario).expect("run");
    assert_eq!(r.connects, 50);
    assert_eq!(r.conns_peak, 50);
    assert_eq!(r.connect_errors, 0);
    assert_eq!(r.json["conns_end"], 50);
    // keep-alive 1 s over 2 s: every client pinged and got answers
    assert!(
        r.json["pongs"].as_u64().unwrap() >= 50,
        "pongs: {}",
        r.json["pongs"]
    );
}

#[test]
fn pubsub_p2p_qos1_no_loss() {
    let Some(b) = start_broker() else { return };
    let dir = std::env::temp_dir().join(format!("rmqload-test-{}.json", std::process::id()));
    let c = cli(&format!(
        "pubsub --mode p2p --host 127.0.0.1 --port {} --clients 4 --qos 1 --rate 400 --duration 2s --quiet --json {}",
        b.port,
        dir.display()
    ));
    let r = run(&c.scenario).expect("run");
    assert_eq!(r.connects, 8);
    assert!(r.sent > 100, "sent {}", r.sent);
    assert_eq!(r.lost, 0);
    assert_eq!(r.recv, r.sent);
    assert_eq!(r.duplicates, 0);
    assert_eq!(r.exit_code, 0);
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dir).unwrap()).unwrap();
    let _ = std::fs::remove_file(&dir);
    assert_eq!(j["received"], r.recv);
    assert!(j["latency_p50_us"].as_u64().unwrap() > 0);
    assert!(j["latency_p999_us"].as_u64().unwrap() >= j["latency_p50_us"].as_u64().unwrap());
    assert_eq!(j["acked"], r.sent);
}

#[test]
fn fanout_and_fanin_deliver_everything_at_qos1() {
    let Some(b) = start_broker() else { return };
    let c = cli(&format!(
        "pubsub --mode fanout --port {} --clients 3 --qos 1 --rate 100 --duration 2s --quiet",
        b.port
    ));
    let r = run(&c.scenario).expect("run");
    assert!(r.sent > 50);
    assert_eq!(r.recv, 3 * r.sent);
    assert_eq!(r.lost, 0);
    let c = cli(&format!(
        "pubsub --mode fanin --subs 2 --port {} --clients 3 --qos 1 --rate 150 --duration 2s --quiet -V 3.1.1",
        b.port
    ));
    let r = run(&c.scenario).expect("run");
    assert!(r.sent > 50);
    assert_eq!(r.recv, r.sent);
    assert_eq!(r.lost, 0);
}

#[test]
fn takeover_closes_every_old_connection() {
    let Some(b) = start_broker() else { return };
    let c = cli(&format!(
        "takeover --port {} --clients 10 --duration 2s --quiet",
        b.port
    ));
    let r = run(&c.scenario).expect("run");
    assert_eq!(r.connects, 20);
    assert_eq!(r.json["takeover_count"], 10);
    let closed = r.json["old_disconnect_0x8e"].as_u64().unwrap()
        + r.json["old_eof_without_disconnect"].as_u64().unwrap();
    assert_eq!(closed, 10);
    assert_eq!(r.json["conns_end"], 10);
}
