//! Keep-alive and CONNECT timeout over real loopback TCP (mqtt-rules.md, "Keep alive").
//! Windows allow for scheduling noise: the broker must never cut early, and must cut by
//! 1.5 x keep-alive + 1 s (we allow another 0.5 s for a loaded CI machine).
mod support;

use std::time::{Duration, Instant};

use ringmq::protocol::*;
use support::*;

const NOISE: Duration = Duration::from_millis(500);

#[test]
fn connect_ping_disconnect_both_versions() {
    let b = TestBroker::start(2);
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (mut c, ack) = connect(b.addr, connect_packet(v, "ping-client", 30, true));
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        assert!(!ack.session_present);
        c.send(&Packet::PingReq);
        assert_eq!(c.recv(Duration::from_secs(5)), Some(Packet::PingResp));
        c.send(&Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
        let (_, closed) = c.wait_closed(Duration::from_secs(5));
        assert!(closed.is_some(), "broker closes after DISCONNECT");
    }
}

fn assert_cut_in_window(start: Instant, closed: Option<Instant>, ka_ms: u64) {
    let closed = closed.expect("broker must close a silent client");
    let took = closed - start;
    let lo = Duration::from_millis(ka_ms * 3 / 2);
    let hi = lo + Duration::from_secs(1) + NOISE;
    assert!(took >= lo, "closed too early: {took:?} < {lo:?}");
    assert!(took <= hi, "closed too late: {took:?} > {hi:?}");
}

#[test]
fn silent_v311_client_is_cut_between_1_5x_and_1_5x_plus_1s() {
    let b = TestBroker::start(2);
    let (mut c, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "silent311", 1, true),
    );
    let start = Instant::now();
    let (seen, closed) = c.wait_closed(Duration::from_secs(6));
    assert!(seen.is_empty(), "3.1.1 gets no DISCONNECT: {seen:?}");
    assert_cut_in_window(start, closed, 1000);
    assert!(b.metric("keepalive_expired") >= 1);
}

#[test]
fn silent_v5_client_gets_disconnect_0x8d_then_close() {
    let b = TestBroker::start(2);
    let (mut c, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V5, "silent5", 2, true),
    );
    let start = Instant::now();
    let (seen, closed) = c.wait_closed(Duration::from_secs(8));
    assert_cut_in_window(start, closed, 2000);
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "expected DISCONNECT 0x8D, saw {seen:?}"
    );
}

#[test]
fn pings_keep_the_connection_alive_past_the_deadline() {
    let b = TestBroker::start(1);
    let (mut c, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V5, "pinger", 1, true),
    );
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        c.send(&Packet::PingReq);
        assert_eq!(c.recv(Duration::from_secs(2)), Some(Packet::PingResp));
    }
}

#[test]
fn keep_alive_zero_is_never_expired() {
    let b = TestBroker::start_with(1, |c| c.connect_timeout_secs = 1);
    let (mut c, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "forever", 0, true),
    );
    // Well past any deadline the broker could have armed (CONNECT timeout is 1 s here).
    let (_, closed) = c.wait_closed(Duration::from_secs(4));
    assert!(closed.is_none(), "keep-alive 0 must disable expiry");
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(Duration::from_secs(2)), Some(Packet::PingResp));
    assert_eq!(b.metric("keepalive_expired"), 0);
}

#[test]
fn socket_that_never_sends_connect_is_closed_at_connect_timeout() {
    let b = TestBroker::start_with(1, |c| c.connect_timeout_secs = 1);
    let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
    let start = Instant::now();
    let (seen, closed) = c.wait_closed(Duration::from_secs(5));
    assert!(seen.is_empty());
    let took = closed.expect("closed at CONNECT timeout") - start;
    assert!(took >= Duration::from_secs(1), "too early: {took:?}");
    assert!(took <= Duration::from_secs(2) + NOISE, "too late: {took:?}");
    assert_eq!(b.metric("connect_timeouts"), 1);
}

#[test]
fn slow_upload_of_a_large_publish_is_not_expired_mid_packet() {
    let b = TestBroker::start(1);
    let (mut sub, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "slow-sub", 0, true),
    );
    subscribe(&mut sub, 1, "slow/topic", QoS::AtMostOnce);
    let (mut c, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "slow-up", 1, true),
    );
    let payload = "x".repeat(8000);
    let mut bytes = bytes::BytesMut::new();
    encode_packet(
        &publish("slow/topic", &payload, QoS::AtMostOnce, 0),
        ProtocolVersion::V311,
        &mut bytes,
    );
    // 8 chunks, one every 400 ms: 3.2 s in all, more than twice the 1.5 s deadline, but the
    // gap between bytes never reaches it.
    for chunk in bytes.chunks(bytes.len().div_ceil(8)) {
        c.send_bytes(chunk)
            .expect("broker must not cut a client that is sending");
        std::thread::sleep(Duration::from_millis(400));
    }
    let got = recv_publish(&mut sub, Duration::from_secs(3)).expect("publish delivered");
    assert_eq!(got.payload.len(), 8000);
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(Duration::from_secs(2)), Some(Packet::PingResp));
}

#[test]
fn broker_writes_do_not_keep_a_silent_client_alive() {
    let b = TestBroker::start(2);
    let (mut silent, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "silent-reader", 1, true),
    );
    subscribe(&mut silent, 1, "feed", QoS::AtMostOnce);
    let (mut publisher, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "feeder", 0, true),
    );
    let start = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let feeder = std::thread::spawn(move || {
        for _ in 0..40 {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            publisher.send(&publish("feed", "tick", QoS::AtMostOnce, 0));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (seen, closed) = silent.wait_closed(Duration::from_secs(6));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    assert!(
        seen.iter().any(|p| matches!(p, Packet::Publish(_))),
        "the silent client was receiving deliveries"
    );
    assert_cut_in_window(start, closed, 1000);
}

#[test]
fn v5_server_keep_alive_is_sent_and_enforced() {
    let b = TestBroker::start_with(1, |c| c.server_keep_alive = Some(1));
    let (mut c, ack) = connect(b.addr, connect_packet(ProtocolVersion::V5, "ska", 60, true));
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    let start = Instant::now();
    let (_, closed) = c.wait_closed(Duration::from_secs(5));
    assert_cut_in_window(start, closed, 1000);
}

#[test]
fn v5_keep_alive_above_maximum_is_lowered_by_server_keep_alive() {
    let b = TestBroker::start_with(1, |c| c.max_keep_alive = 30);
    let (_c, ack) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V5, "capped", 600, true),
    );
    assert_eq!(ack.properties.server_keep_alive, Some(30));
    let (_c2, ack) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V5, "fine", 20, true),
    );
    assert_eq!(
        ack.properties.server_keep_alive, None,
        "omitted when accepted"
    );
}

#[test]
fn keep_alive_expiry_publishes_the_will() {
    let b = TestBroker::start(2);
    let (mut watcher, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "watcher", 0, true),
    );
    subscribe(&mut watcher, 1, "wills/#", QoS::AtLeastOnce);
    let mut c = connect_packet(ProtocolVersion::V311, "dies", 1, true);
    c.will = Some(will("wills/dies", "gone", None));
    let (_dies, _) = connect(b.worker_addrs[1], c);
    let got = recv_publish(&mut watcher, Duration::from_secs(5)).expect("will delivered");
    assert_eq!(got.topic, "wills/dies");
    assert_eq!(&got.payload[..], b"gone");
}
