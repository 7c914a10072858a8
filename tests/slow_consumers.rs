//! Slow consumers with real clients (issue #15): a `mosquitto_pub -l` burst of QoS 0 reaches
//! `mosquitto_sub` subscribers that cannot keep up whole and in order, with the default
//! limits: what their sockets cannot take waits in their QoS 0 queues (`broker/overflow.rs`).
//!
//! The subscribers' stdout pipes are not read until the broker has routed the whole burst, so
//! each subscriber stops reading its socket once its pipe is full: a slow consumer for sure,
//! without timing anything. (The limits themselves and the drop counters are tested on the
//! broker core: `broker::tests::qos0_*`.) Skips when the Debian tools are not installed.
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// 30,000 messages of 900 bytes: 27 MB for each subscriber, far more than its pipe and socket
/// buffers hold, within the default QoS 0 queue of 32 MiB.
const N: usize = 30_000;
const SIZE: usize = 900;
const SUBS: usize = 4;

fn port_args(addr: SocketAddr) -> [String; 4] {
    [
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
    ]
}

fn line_of(k: usize) -> String {
    format!("{k:06} {}", "x".repeat(SIZE - 7))
}

#[test]
fn a_qos0_burst_reaches_slow_mosquitto_subscribers_whole_and_in_order() {
    if !have_mosquitto() {
        return;
    }
    let b = TestBroker::start(2);
    // Every client on worker 0: the burst is not handed between workers.
    let addr = b.worker_addrs[0];
    // A subscriber is subscribed once it printed this retained message.
    let st = Command::new("mosquitto_pub")
        .args(port_args(addr))
        .args(["-t", "tp/ready", "-m", "ready", "-r"])
        .status()
        .unwrap();
    assert!(st.success());
    let mut subs: Vec<(Child, BufReader<ChildStdout>)> = (0..SUBS)
        .map(|_| {
            let mut child = Command::new("mosquitto_sub")
                .args(port_args(addr))
                .args(["-t", "tp/#", "-q", "0", "-W", "60"])
                .args(["-C", &(N + 1).to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap());
            let mut first = String::new();
            lines.read_line(&mut first).unwrap();
            assert_eq!(first, "ready\n", "subscribed");
            (child, lines)
        })
        .collect();

    let mut publisher = Command::new("mosquitto_pub")
        .args(port_args(addr))
        .args(["-t", "tp/x", "-q", "0", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = std::io::BufWriter::new(publisher.stdin.take().unwrap());
    for k in 0..N {
        writeln!(stdin, "{}", line_of(k)).unwrap();
    }
    drop(stdin);
    assert!(publisher.wait().unwrap().success(), "mosquitto_pub");

    // The broker has read the whole burst while nobody reads the subscribers' pipes.
    let deadline = Instant::now() + Duration::from_secs(120);
    while b.metric("publish_in") < (N + 1) as u64 {
        assert!(
            Instant::now() < deadline,
            "the broker read {} of {} PUBLISHes",
            b.metric("publish_in"),
            N + 1
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        b.metric("qos0_queued_messages") > 0,
        "the subscribers fell behind: their QoS 0 queues hold what their sockets cannot"
    );

    for (i, (mut child, mut lines)) in subs.drain(..).enumerate() {
        let mut got = String::new();
        for k in 0..N {
            got.clear();
            lines.read_line(&mut got).unwrap();
            assert_eq!(
                got.trim_end_matches('\n'),
                line_of(k),
                "subscriber {i}, message {k}: every message, in order"
            );
        }
        assert!(child.wait().unwrap().success(), "mosquitto_sub {i}");
    }
    assert_eq!(b.metric("slow_consumer_drops"), 0);
    assert_eq!(b.metric("mailbox_drops"), 0);
    assert_eq!(b.metric("qos0_queued_messages"), 0, "every queue drained");
    assert_eq!(b.metric("qos0_queued_bytes"), 0);
}
