//! Scenario logic against ringmq itself: a broker started in-process by the test on
//! 127.0.0.1 port 0 (as the broker's own tests do in tests/support), driven through the
//! generator's library entry point. The generator never uses the broker's code; only this
//! test does (a dev-dependency).

use clap::Parser;
use ringmq::broker::BrokerHandle;
use ringmq::config::Config;
use ringmq_load::opts::Cli;
use ringmq_load::run::{run, Report};
use ringmq_load::wire::{self, ConnectOpts, Version};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

struct Broker {
    handle: Option<BrokerHandle>,
    addr: SocketAddr,
}

impl Broker {
    fn start(workers: usize) -> Broker {
        let cfg = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers,
            pin_workers: false,
            max_connections_per_worker: 2048,
            recv_buffers: 256,
            sys_interval_secs: 0,
            ..Config::default()
        };
        let handle = ringmq::broker::start(cfg).expect("broker starts");
        let addr = handle.local_addrs()[0];
        Broker {
            handle: Some(handle),
            addr,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
            h.join();
        }
    }
}

fn load(b: &Broker, args: &str) -> Report {
    let line = format!(
        "{args} --host {} --port {} --quiet",
        b.addr.ip(),
        b.addr.port()
    );
    let cli = Cli::try_parse_from(std::iter::once("ringmq-load").chain(line.split_whitespace()))
        .expect("valid args");
    run(&cli.scenario).expect("run")
}

/// Every count that must be zero in a clean run.
fn assert_clean(r: &Report) {
    assert_eq!(r.connect_errors, 0, "{}", r.json);
    assert_eq!(r.json["connack_errors"], 0, "{}", r.json);
    assert_eq!(r.json["subscribe_errors"], 0, "{}", r.json);
    assert_eq!(r.json["protocol_errors"], 0, "{}", r.json);
    assert_eq!(r.json["first_error"], serde_json::Value::Null, "{}", r.json);
    assert_eq!(r.exit_code, 0, "{}", r.json);
}

#[test]
fn pubsub_p2p_qos1_every_message_arrives_once() {
    let b = Broker::start(2);
    let r = load(
        &b,
        "pubsub --mode p2p --clients 20 --rate 2000 --qos 1 --size 64 --duration 2s --threads 2",
    );
    assert_clean(&r);
    assert_eq!(r.connects, 40, "{}", r.json);
    assert!(r.sent > 1000, "{}", r.json);
    assert_eq!(r.recv, r.sent, "{}", r.json);
    assert_eq!(r.json["acked"], r.sent, "{}", r.json);
    assert_eq!((r.lost, r.duplicates), (0, 0), "{}", r.json);
    assert_eq!(r.json["conns_end"], 40, "{}", r.json);
}

#[test]
fn qos2_payloads_larger_than_a_receive_buffer_are_reassembled() {
    // 20 kB publishes span several of the engine's 4 KiB provided buffers on the receiving
    // side; MQTT 3.1.1 this time.
    let b = Broker::start(1);
    let r = load(
        &b,
        "pubsub --mode p2p --clients 4 --rate 400 --qos 2 --size 20000 --version 3.1.1 \
         --duration 2s",
    );
    assert_clean(&r);
    assert!(r.sent > 300, "{}", r.json);
    assert_eq!(r.recv, r.sent, "{}", r.json);
    assert_eq!(r.json["acked"], r.sent, "{}", r.json);
    assert_eq!((r.lost, r.duplicates), (0, 0), "{}", r.json);
}

#[test]
fn fanout_qos0_reaches_every_subscriber() {
    let b = Broker::start(2);
    let r = load(
        &b,
        "pubsub --mode fanout --clients 50 --rate 50 --qos 0 --size 16 --duration 2s --threads 2",
    );
    assert_clean(&r);
    assert!(r.sent >= 20, "{}", r.json);
    assert_eq!(r.recv, r.sent * 50, "{}", r.json);
    assert_eq!(r.lost, 0, "{}", r.json);
}

#[test]
fn conn_pings_at_the_keepalive_and_reconnects_after_a_takeover() {
    let b = Broker::start(1);
    let addr = b.addr;
    // While the generator holds its connections, another client takes over one client id
    // once: the generator's connection is closed by the broker and comes back.
    let kick = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        wire::encode_connect(
            &mut out,
            &ConnectOpts {
                version: Version::V5,
                client_id: "rc-3",
                clean: true,
                keepalive: 0,
                session_expiry: None,
                will: None,
            },
        );
        s.write_all(&out).unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack[0], 0x20, "CONNACK");
        drop(s);
    });
    let r = load(
        &b,
        "conn --clients 30 --ramp 0 --keepalive 1 --reconnect --prefix rc- --duration 3s \
         --threads 2",
    );
    kick.join().unwrap();
    assert_clean(&r);
    assert!(r.json["reconnects"].as_u64().unwrap() >= 1, "{}", r.json);
    assert!(r.json["closed"].as_u64().unwrap() >= 1, "{}", r.json);
    assert_eq!(r.json["conns_end"], 30, "{}", r.json);
    // keep-alive 1 s over 3 s: every client pinged and got answers
    assert!(r.json["pongs"].as_u64().unwrap() >= 30, "{}", r.json);
}

#[test]
fn keepalive_silent_clients_get_their_wills_published() {
    let b = Broker::start(1);
    let r = load(&b, "keepalive --clients 10 --keepalive 1 --duration 4s");
    assert_clean(&r);
    assert_eq!(r.json["silent_closed_by_broker"], 10, "{}", r.json);
    assert_eq!(r.json["wills_received"], 10, "{}", r.json);
}
