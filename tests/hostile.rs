//! Hostile input against a running broker: each case gets the spec's answer, the broker stays
//! up, and a well-behaved client on the side keeps working.
mod support;

use std::time::Duration;

use ringmq::protocol::*;
use support::*;

const T: Duration = Duration::from_secs(5);

/// The v5 CONNECT bytes for client id `id`, keep-alive 30, clean start.
fn v5_connect_bytes(id: &str) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    encode_packet(
        &Packet::Connect(Box::new(connect_packet(ProtocolVersion::V5, id, 30, true))),
        ProtocolVersion::V5,
        &mut out,
    );
    out.to_vec()
}

/// Send `bad` after a good v5 CONNECT; return the reason of the DISCONNECT the broker sent
/// before closing (None if it closed without one). Panics if the broker does not close.
fn v5_answer_to(b: &TestBroker, id: &str, bad: &[u8]) -> Option<ReasonCode> {
    let (mut c, _) = connect(b.addr, connect_packet(ProtocolVersion::V5, id, 30, true));
    c.send_bytes(bad).unwrap();
    let (seen, closed) = c.wait_closed(T);
    assert!(closed.is_some(), "{id}: broker must close, saw {seen:?}");
    seen.iter().rev().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

fn bystander_still_works(b: &TestBroker) {
    let (mut s, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "bystander", 30, true),
    );
    subscribe(&mut s, 1, "alive", QoS::AtMostOnce);
    s.send(&publish("alive", "yes", QoS::AtMostOnce, 0));
    assert!(recv_publish(&mut s, T).is_some(), "broker still routes");
}

#[test]
fn packet_before_connect_closes_without_answer() {
    let b = TestBroker::start(1);
    let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
    c.send_bytes(&[0xC0, 0x00]).unwrap(); // PINGREQ
    let (seen, closed) = c.wait_closed(T);
    assert!(closed.is_some());
    assert!(seen.is_empty(), "no PINGRESP before CONNECT: {seen:?}");
    bystander_still_works(&b);
}

#[test]
fn second_connect_is_a_protocol_error() {
    let b = TestBroker::start(1);
    assert_eq!(
        v5_answer_to(&b, "twice", &v5_connect_bytes("twice")),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    bystander_still_works(&b);
}

#[test]
fn unsupported_protocol_level_is_refused() {
    let b = TestBroker::start(1);
    // "MQTT", level 6.
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x1E, 0x00, 0x00,
    ];
    let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
    c.send_bytes(&bytes).unwrap();
    let (seen, closed) = c.wait_closed(T);
    assert!(closed.is_some());
    if let Some(Packet::ConnAck(a)) = seen.first() {
        assert_eq!(
            a.code.to_v311_connack(),
            0x01,
            "unacceptable protocol version"
        );
    }
    bystander_still_works(&b);
}

#[test]
fn oversized_packet_gets_0x95() {
    let b = TestBroker::start_with(1, |c| c.max_packet_size = 1024);
    // PUBLISH announcing 100,000 bytes: refused from the fixed header alone.
    let bad = [0x30, 0xA0, 0x8D, 0x06];
    assert_eq!(
        v5_answer_to(&b, "big", &bad),
        Some(ReasonCode::PACKET_TOO_LARGE)
    );
    bystander_still_works(&b);
}

#[test]
fn five_byte_remaining_length_is_malformed() {
    let b = TestBroker::start(1);
    let bad = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    let r = v5_answer_to(&b, "varint", &bad);
    assert!(
        matches!(
            r,
            Some(ReasonCode::MALFORMED_PACKET) | Some(ReasonCode::PACKET_TOO_LARGE)
        ),
        "{r:?}"
    );
}

#[test]
fn invalid_topics_are_rejected() {
    let b = TestBroker::start(1);
    // PUBLISH QoS 0 topic "a/+" (wildcard in a topic name).
    let wildcard = [0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00];
    let r = v5_answer_to(&b, "wild", &wildcard);
    assert!(r.is_some_and(|r| r.is_error()), "{r:?}");
    // Topic with invalid UTF-8.
    let bad_utf8 = [0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00];
    assert_eq!(
        v5_answer_to(&b, "utf8", &bad_utf8),
        Some(ReasonCode::MALFORMED_PACKET)
    );
    // Topic containing U+0000.
    let nul = [0x30, 0x05, 0x00, 0x02, b'a', 0x00, 0x00];
    assert_eq!(
        v5_answer_to(&b, "nul", &nul),
        Some(ReasonCode::MALFORMED_PACKET)
    );
    bystander_still_works(&b);
}

#[test]
fn packet_id_zero_and_empty_subscribe_are_errors() {
    let b = TestBroker::start(1);
    // PUBLISH QoS 1 with packet id 0.
    let pid0 = [0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x00, 0x00];
    let r = v5_answer_to(&b, "pid0", &pid0);
    assert!(r.is_some_and(|r| r.is_error()), "{r:?}");
    // SUBSCRIBE with no filters (packet id 1, empty properties).
    let empty_sub = [0x82, 0x03, 0x00, 0x01, 0x00];
    let r = v5_answer_to(&b, "nosub", &empty_sub);
    assert!(r.is_some_and(|r| r.is_error()), "{r:?}");
    bystander_still_works(&b);
}

#[test]
fn duplicate_property_is_a_protocol_error() {
    let b = TestBroker::start(1);
    // PUBLISH QoS 0 topic "t", properties: Message Expiry Interval twice.
    let dup = [
        0x30, 0x0F, 0x00, 0x01, b't', 0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2, b'x',
    ];
    assert_eq!(
        v5_answer_to(&b, "dupprop", &dup),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    bystander_still_works(&b);
}

#[test]
fn truncated_connect_then_silence_hits_connect_timeout() {
    let b = TestBroker::start_with(1, |c| c.connect_timeout_secs = 1);
    let full = v5_connect_bytes("trunc");
    let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V5);
    c.send_bytes(&full[..full.len() - 3]).unwrap();
    let (_, closed) = c.wait_closed(T);
    assert!(
        closed.is_some(),
        "an incomplete CONNECT does not hold the socket forever"
    );
    bystander_still_works(&b);
}

#[test]
fn many_sockets_that_never_speak_are_all_closed() {
    let b = TestBroker::start_with(2, |c| c.connect_timeout_secs = 1);
    let mut socks: Vec<Raw> = (0..500)
        .map(|_| Raw::connect_tcp(b.addr, ProtocolVersion::V311))
        .collect();
    bystander_still_works(&b);
    for s in socks.iter_mut() {
        let (_, closed) = s.wait_closed(T);
        assert!(closed.is_some());
    }
    assert_eq!(b.metric("connect_timeouts"), 500);
}

// ---------------------------------------------------------------------------------------------
// Issue 7 additions: every case in both versions where they differ, bad protocol levels and
// names, bad strings outside PUBLISH, and clients that never read.
// ---------------------------------------------------------------------------------------------

/// Send `bad` after a good 3.1.1 CONNECT: 3.1.1 has no server DISCONNECT, so the answer to a
/// malformed packet or protocol violation is closing the connection with nothing sent.
fn v311_closes_silently_on(b: &TestBroker, id: &str, bad: &[u8]) {
    let (mut c, _) = connect(b.addr, connect_packet(ProtocolVersion::V311, id, 30, true));
    c.send_bytes(bad).unwrap();
    let (seen, closed) = c.wait_closed(T);
    assert!(closed.is_some(), "{id}: broker must close");
    assert!(
        seen.is_empty(),
        "{id}: nothing is sent back in 3.1.1: {seen:?}"
    );
}

/// A PUBLISH QoS 0 with `topic` as its raw topic bytes (3.1.1 layout: no properties).
fn v311_publish_raw(topic: &[u8]) -> Vec<u8> {
    let mut v = vec![0x30, (2 + topic.len() + 1) as u8, 0, topic.len() as u8];
    v.extend_from_slice(topic);
    v.push(b'x');
    v
}

/// The same for MQTT 5 (empty properties).
fn v5_publish_raw(topic: &[u8]) -> Vec<u8> {
    let mut v = vec![0x30, (2 + topic.len() + 2) as u8, 0, topic.len() as u8];
    v.extend_from_slice(topic);
    v.extend_from_slice(&[0x00, b'x']);
    v
}

/// Topic names the spec forbids in PUBLISH, each with why.
const BAD_TOPIC_NAMES: &[(&str, &[u8])] = &[
    ("plus", b"a/+"),
    ("plus-alone", b"+"),
    ("hash", b"a/#"),
    ("hash-alone", b"#"),
    ("hash-inside", b"a#b"),
    ("plus-inside", b"a+b/c"),
    ("nul", b"a\x00b"),
    ("nul-alone", b"\x00"),
    ("bad-utf8", b"\xC3\x28"),
    ("lone-continuation", b"a\x80"),
    ("overlong-nul", b"a\xC0\x80"),
    ("utf16-surrogate", b"\xED\xA0\x80"),
    ("beyond-u10ffff", b"\xF4\x90\x80\x80"),
    ("empty-without-alias", b""),
];

#[test]
fn v5_publish_with_invalid_topic_name_gets_an_error_disconnect() {
    let b = TestBroker::start(1);
    for (name, topic) in BAD_TOPIC_NAMES {
        let r = v5_answer_to(&b, &format!("v5-{name}"), &v5_publish_raw(topic));
        let want: &[ReasonCode] = if topic.contains(&b'+') || topic.contains(&b'#') {
            // Wildcards: Topic Name Invalid (a well-formed string, a bad topic).
            &[ReasonCode::TOPIC_NAME_INVALID]
        } else if topic.is_empty() {
            // Empty topic without a Topic Alias: a protocol error.
            &[ReasonCode::PROTOCOL_ERROR, ReasonCode::TOPIC_NAME_INVALID]
        } else {
            // Not a valid UTF-8 string (or U+0000 in it): malformed.
            &[ReasonCode::MALFORMED_PACKET]
        };
        assert!(
            r.is_some_and(|r| want.contains(&r)),
            "{name}: got {r:?}, want one of {want:?}"
        );
    }
    assert_eq!(b.metric("publish_in"), 0, "none of them was routed");
    bystander_still_works(&b);
}

#[test]
fn v311_publish_with_invalid_topic_name_closes_the_connection() {
    let b = TestBroker::start(1);
    let (mut watcher, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "w311", 0, true),
    );
    subscribe(&mut watcher, 1, "#", QoS::AtMostOnce);
    for (name, topic) in BAD_TOPIC_NAMES {
        v311_closes_silently_on(&b, &format!("v311-{name}"), &v311_publish_raw(topic));
    }
    assert!(
        recv_publish(&mut watcher, Duration::from_millis(300)).is_none(),
        "nothing invalid was routed"
    );
    bystander_still_works(&b);
}

#[test]
fn invalid_strings_in_subscribe_filters_are_malformed() {
    let b = TestBroker::start(1);
    // SUBSCRIBE packet id 1, one filter, options QoS 0.
    let sub_v311 = |f: &[u8]| {
        let mut v = vec![0x82, (2 + 2 + f.len() + 1) as u8, 0, 1, 0, f.len() as u8];
        v.extend_from_slice(f);
        v.push(0);
        v
    };
    let sub_v5 = |f: &[u8]| {
        let mut v = vec![
            0x82,
            (2 + 1 + 2 + f.len() + 1) as u8,
            0,
            1,
            0,
            0,
            f.len() as u8,
        ];
        v.extend_from_slice(f);
        v.push(0);
        v
    };
    for (name, filter) in [
        ("nul", &b"a/\x00/#"[..]),
        ("bad-utf8", b"a/\xFF"),
        ("surrogate", b"\xED\xB0\x80/+"),
    ] {
        v311_closes_silently_on(&b, &format!("sub311-{name}"), &sub_v311(filter));
        assert_eq!(
            v5_answer_to(&b, &format!("sub5-{name}"), &sub_v5(filter)),
            Some(ReasonCode::MALFORMED_PACKET),
            "{name}"
        );
    }
    bystander_still_works(&b);
}

/// Raw CONNECT bytes: protocol `name`, `level`, Clean Session, keep-alive 30, client id "x"
/// (and an empty property block when `level` is 5).
fn connect_raw(name: &[u8], level: u8) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, 0x02, 0x00, 0x1E]);
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&[0x00, 0x01, b'x']);
    let mut v = vec![0x10, body.len() as u8];
    v.extend(body);
    v
}

#[test]
fn every_unsupported_protocol_level_gets_connack_0x01_then_close() {
    let b = TestBroker::start(1);
    for (name, level) in [
        (&b"MQTT"[..], 0u8),
        (b"MQTT", 1),
        (b"MQTT", 2),
        (b"MQTT", 3),
        // MQIsdp level 3 (MQTT 3.1) is supported now: see tests/interop_mosquitto.rs.
        (b"MQIsdp", 4),
        (b"MQTT", 6),
        (b"MQTT", 0x84), // bridge bit + 4 (a Mosquitto extension we do not speak)
        (b"MQTT", 255),
    ] {
        let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
        c.send_bytes(&connect_raw(name, level)).unwrap();
        let (seen, closed) = c.wait_closed(T);
        let what = format!("{} level {level}", String::from_utf8_lossy(name));
        assert!(closed.is_some(), "{what}: closed");
        // [MQTT-3.1.2-2]: CONNACK return code 0x01 (unacceptable protocol level), then close.
        match seen.as_slice() {
            [Packet::ConnAck(a)] => {
                assert_eq!(a.code.to_v311_connack(), 0x01, "{what}: {a:?}");
                assert!(!a.session_present);
            }
            other => panic!("{what}: expected one CONNACK 0x01, got {other:?}"),
        }
    }
    // The supported levels still work after all that.
    for level in [4u8, 5] {
        let mut c = Raw::connect_tcp(
            b.addr,
            if level == 5 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            },
        );
        c.send_bytes(&connect_raw(b"MQTT", level)).unwrap();
        assert!(
            matches!(c.recv(T), Some(Packet::ConnAck(a)) if a.code == ReasonCode::SUCCESS),
            "level {level} accepted"
        );
    }
    bystander_still_works(&b);
}

#[test]
fn unknown_protocol_name_is_closed_without_connack() {
    let b = TestBroker::start(1);
    // [MQTT-3.1.2-1]: the server MAY disconnect; it must not go on as if it were MQTT.
    for name in [&b"MQTX"[..], b"mqtt", b"", b"MQTT\x00", b"HTTP"] {
        let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
        c.send_bytes(&connect_raw(name, 4)).unwrap();
        let (seen, closed) = c.wait_closed(T);
        assert!(closed.is_some(), "{name:?}: closed");
        assert!(
            !seen
                .iter()
                .any(|p| matches!(p, Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS)),
            "{name:?}: never accepted: {seen:?}"
        );
    }
    // An HTTP request on the MQTT port: not a CONNECT, closed.
    let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
    c.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (seen, closed) = c.wait_closed(T);
    assert!(closed.is_some() && seen.is_empty(), "{seen:?}");
    bystander_still_works(&b);
}

#[test]
fn connect_with_an_invalid_will_topic_or_client_id_is_refused_and_no_will_is_kept() {
    let b = TestBroker::start(1);
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for (name, topic) in [
            ("wild", "wills/#"),
            ("plus", "wills/+/x"),
            ("nul", "wills/\0"),
        ] {
            let mut p = connect_packet(v, &format!("badwill-{name}"), 30, true);
            p.will = Some(will(topic, "never", None));
            let mut c = Raw::connect_tcp(b.addr, v);
            c.send(&Packet::Connect(Box::new(p)));
            let (seen, closed) = c.wait_closed(T);
            assert!(closed.is_some(), "{v:?} {name}: closed");
            assert!(
                !seen
                    .iter()
                    .any(|p| matches!(p, Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS)),
                "{v:?} {name}: refused: {seen:?}"
            );
        }
    }
    // Client id that is not valid UTF-8 (3.1.1 CONNECT, id bytes C3 28).
    let bad_id = [
        0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x1E, 0x00, 0x02, 0xC3,
        0x28,
    ];
    let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
    c.send_bytes(&bad_id).unwrap();
    let (seen, closed) = c.wait_closed(T);
    assert!(closed.is_some());
    assert!(
        !seen
            .iter()
            .any(|p| matches!(p, Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS)),
        "{seen:?}"
    );
    assert_eq!(
        b.metric("wills_published"),
        0,
        "a refused CONNECT leaves no will"
    );
    bystander_still_works(&b);
}

// ---------------------------------------------------------------------------------------------
// Clients that never read
// ---------------------------------------------------------------------------------------------

/// Resident set size of this process (broker included), in KiB.
/// Reads a 3.1.1 publisher's PUBACKs (4 bytes each) on another thread until `n` have come or
/// the connection ends; the thread returns how many came.
fn count_pubacks(p: &Raw, n: usize) -> std::thread::JoinHandle<usize> {
    let mut acks = p.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while total < n * 4 {
            match std::io::Read::read(&mut acks, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => total += k,
            }
        }
        total / 4
    })
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Everything a subscriber that stopped reading gets once it reads again: a PINGREQ, then
/// PUBLISHes (QoS 0 waiting in its queue follows the PINGRESP) until 2 s pass without one.
/// Returns how many PUBLISHes came, checking each has `size` bytes of payload.
fn read_backlog(slow: &mut Raw, size: usize) -> u64 {
    slow.send(&Packet::PingReq);
    let mut received = 0u64;
    let mut pong = false;
    loop {
        match slow.recv(Duration::from_secs(if pong { 2 } else { 10 })) {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.payload.len(), size);
                received += 1;
            }
            Some(Packet::PingResp) if !pong => pong = true,
            None if pong => return received,
            other => panic!("slow consumer: unexpected {other:?} (disconnected?)"),
        }
    }
}

/// Publish `n` QoS 0 messages of `size` bytes to `topic` as fast as the broker takes them.
fn flood(addr: std::net::SocketAddr, id: &str, topic: &str, n: usize, size: usize) {
    let (mut p, _) = connect(addr, connect_packet(ProtocolVersion::V311, id, 0, true));
    let mut bytes = bytes::BytesMut::new();
    encode_packet(
        &publish(topic, &"f".repeat(size), QoS::AtMostOnce, 0),
        ProtocolVersion::V311,
        &mut bytes,
    );
    for _ in 0..n {
        p.send_bytes(&bytes)
            .expect("the broker keeps reading the publisher");
    }
    p.send(&Packet::PingReq);
    assert_eq!(p.recv(T), Some(Packet::PingResp), "publisher still served");
}

#[test]
fn slow_qos0_consumer_gets_drops_while_others_flow_and_memory_stays_bounded() {
    const LIMIT: usize = 64 * 1024;
    const N: usize = 8192;
    const SIZE: usize = 8 * 1024; // 64 MiB in all
    const QUEUE: usize = 4 << 20;
    let b = TestBroker::start_with(2, |c| {
        c.send_queue_limit = LIMIT;
        c.max_queued_qos0_bytes = QUEUE;
    });
    // The slow consumer: subscribes, then never reads (until the end).
    let (mut slow, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "never-reads", 0, true),
    );
    subscribe(&mut slow, 1, "flood/#", QoS::AtMostOnce);
    // A pair on the side that must not notice.
    let (mut side_sub, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "side-sub", 0, true),
    );
    subscribe(&mut side_sub, 1, "side/t", QoS::AtLeastOnce);
    let (mut side_pub, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "side-pub", 0, true),
    );

    let rss_before = rss_kib();
    // From the other worker: every message crosses a worker mailbox too.
    let addr = b.worker_addrs[1];
    let flooder = std::thread::spawn(move || flood(addr, "flooder", "flood/x", N, SIZE));
    let mut side_worst = Duration::ZERO;
    let mut side_count = 0u32;
    let mut rss_peak = rss_before;
    while !flooder.is_finished() || side_count == 0 {
        let t = std::time::Instant::now();
        side_pub.send(&publish(
            "side/t",
            &side_count.to_string(),
            QoS::AtLeastOnce,
            1,
        ));
        let got = recv_publish(&mut side_sub, T).expect("side traffic flows during the flood");
        assert_eq!(
            &got.payload[..],
            side_count.to_string().as_bytes(),
            "in order"
        );
        side_worst = side_worst.max(t.elapsed());
        side_count += 1;
        rss_peak = rss_peak.max(rss_kib());
        std::thread::sleep(Duration::from_millis(20));
    }
    flooder.join().expect("flooder");
    let rss_after = rss_kib();
    let drops = b.metric("slow_consumer_drops");
    assert!(
        drops > 0,
        "QoS 0 to the slow consumer is dropped beyond its queue, not buffered"
    );
    assert_eq!(
        b.metric("qos0_drops_queue_bytes"),
        drops,
        "dropped at the queue's byte limit, counted so"
    );
    // 64 MiB went through the broker; without a bound most of it would sit in the slow
    // consumer's queue. Generous: allocator slack and the test's own buffers fit easily.
    let grew = rss_peak.saturating_sub(rss_before);
    assert!(
        grew < 24 * 1024,
        "RSS grew by {grew} KiB during a 64 MiB flood (send_queue_limit {LIMIT} B, QoS 0 \
         queue {QUEUE} B)"
    );
    // Policy for QoS 0: queue up to the limit, then drop, stay connected. Everything not
    // dropped is delivered.
    let received = read_backlog(&mut slow, SIZE);
    // (Dropped at the socket, or before reaching the slow consumer's worker at all.)
    let mailbox_drops = b.metric("mailbox_drops");
    assert_eq!(
        received + drops + mailbox_drops,
        N as u64,
        "each message was either delivered or counted as dropped"
    );
    eprintln!(
        "slow QoS 0 consumer, send_queue_limit {LIMIT} B, {N} x {SIZE} B: {received} delivered, \
         {drops} dropped; side round trips {side_count}, worst {side_worst:?}; RSS {rss_before} \
         KiB -> peak {rss_peak} KiB -> {rss_after} KiB"
    );
    bystander_still_works(&b);
}

#[test]
fn slow_qos1_consumer_queue_is_bounded_and_counted() {
    const N: usize = 3000;
    const SIZE: usize = 8 * 1024;
    // One worker: routing is done before the PUBACK, so the counts below are exact.
    let b = TestBroker::start_with(1, |c| {
        c.send_queue_limit = 64 * 1024;
        c.max_inflight = 16;
        c.max_queued_messages = 100;
    });
    let (mut slow, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "never-acks", 0, true),
    );
    subscribe(&mut slow, 1, "q1/#", QoS::AtLeastOnce);
    let (mut p, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "q1-pub", 0, true),
    );
    // The publisher reads its PUBACKs on another thread (it is not the slow one).
    let reader = count_pubacks(&p, N);
    let rss_before = rss_kib();
    let payload = "q".repeat(SIZE);
    for i in 0..N {
        p.send(&publish(
            "q1/x",
            &payload,
            QoS::AtLeastOnce,
            (i % 60000 + 1) as u16,
        ));
    }
    assert_eq!(
        reader.join().unwrap(),
        N,
        "every QoS 1 PUBLISH acknowledged"
    );
    let grew = rss_kib().saturating_sub(rss_before);
    let queue_drops = b.metric("queue_drops");
    assert!(
        queue_drops > 0,
        "the session queue overflowed and counted it"
    );
    assert!(grew < 16 * 1024, "RSS grew by {grew} KiB");
    // Read and acknowledge everything now: inflight + queued arrive, the rest was dropped.
    let mut received = 0u64;
    while let Some(got) = recv_publish(&mut slow, Duration::from_secs(2)) {
        assert_eq!(got.payload.len(), SIZE);
        received += 1;
    }
    assert_eq!(received + queue_drops, N as u64);
    assert!(
        received <= 16 + 100,
        "at most inflight + queued: {received}"
    );
    slow.send(&Packet::PingReq);
    assert_eq!(slow.recv(T), Some(Packet::PingResp), "still connected");
    eprintln!(
        "slow QoS 1 consumer, inflight 16, queue 100: {received} delivered, {queue_drops} \
         dropped of {N}; RSS +{grew} KiB"
    );
    bystander_still_works(&b);
}

#[test]
fn qos1_backlog_larger_than_the_send_queue_limit_is_delivered_not_disconnected() {
    // A session resumed with a backlog: the broker sends a whole in-flight window at once.
    // 16 x 16 KiB = 256 KiB is over the 64 KiB socket limit; QoS 1 must wait for the window,
    // not get the (well-behaved) client disconnected as a slow consumer.
    const N: usize = 50;
    const SIZE: usize = 16 * 1024;
    let b = TestBroker::start_with(1, |c| {
        c.send_queue_limit = 64 * 1024;
        c.max_inflight = 16;
    });
    let (mut sub, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "backlog", 30, false),
    );
    subscribe(&mut sub, 1, "backlog/t", QoS::AtLeastOnce);
    sub.send(&Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    assert!(sub.wait_closed(T).1.is_some());
    let (mut p, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "backlog-pub", 30, true),
    );
    let payload = "b".repeat(SIZE);
    for i in 0..N {
        p.send(&publish(
            "backlog/t",
            &payload,
            QoS::AtLeastOnce,
            i as u16 + 1,
        ));
        assert!(matches!(p.recv(T), Some(Packet::PubAck(_))));
    }
    let (mut sub, ack) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "backlog", 30, false),
    );
    assert!(ack.session_present);
    let mut got = 0;
    while let Some(m) = recv_publish(&mut sub, Duration::from_secs(2)) {
        assert_eq!(m.payload.len(), SIZE);
        got += 1;
    }
    assert_eq!(got, N, "the whole backlog arrives");
    sub.send(&Packet::PingReq);
    assert_eq!(sub.recv(T), Some(Packet::PingResp), "still connected");
    assert_eq!(b.metric("queue_drops"), 0);
}

#[test]
fn flood_across_workers_to_a_busy_worker_keeps_memory_bounded() {
    // Worker 0 holds many QoS 0 subscribers that never read, so each message costs it far
    // more than it costs worker 1 (which only decodes and posts): the cross-worker hand-off
    // must not become an unbounded buffer.
    const N: usize = 4096;
    const SIZE: usize = 16 * 1024; // 64 MiB in all
    const SUBS: usize = 100;
    let b = TestBroker::start_with(2, |c| {
        c.send_queue_limit = 64 * 1024;
        c.worker_mailbox_limit = 4 << 20;
    });
    let mut subs = Vec::new();
    for i in 0..SUBS {
        let (mut s, _) = connect(
            b.worker_addrs[0],
            connect_packet(ProtocolVersion::V311, &format!("busy-{i}"), 0, true),
        );
        subscribe(&mut s, 1, "xw/#", QoS::AtMostOnce);
        subs.push(s);
    }
    let rss_before = rss_kib();
    let addr = b.worker_addrs[1];
    let flooder = std::thread::spawn(move || flood(addr, "xw-flooder", "xw/t", N, SIZE));
    let mut rss_peak = rss_before;
    while !flooder.is_finished() {
        rss_peak = rss_peak.max(rss_kib());
        std::thread::sleep(Duration::from_millis(10));
    }
    flooder.join().unwrap();
    // Until worker 0 has caught up.
    let t = std::time::Instant::now();
    let mut last = (0, 0);
    loop {
        rss_peak = rss_peak.max(rss_kib());
        let now = (b.metric("slow_consumer_drops"), b.metric("publish_out"));
        if now == last && t.elapsed() > Duration::from_millis(500) {
            break;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(100));
    }
    let grew = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "cross-worker flood {N} x {SIZE} B to {SUBS} slow subscribers, mailbox limit 4 MiB: \
         RSS {rss_before} KiB -> peak {rss_peak} KiB (+{grew} KiB), socket drops {}, mailbox \
         drops {}, caught up after {:?}",
        b.metric("slow_consumer_drops"),
        b.metric("mailbox_drops"),
        t.elapsed()
    );
    assert!(grew < 24 * 1024, "RSS grew by {grew} KiB");
    bystander_still_works(&b);
}

#[test]
fn qos0_messages_larger_than_half_the_send_queue_limit_are_dropped_not_fatal() {
    // 40 KiB messages with a 64 KiB socket limit, to a subscriber that never reads: once
    // the kernel buffers and its 1 MiB QoS 0 queue are full, QoS 0 is dropped (the policy),
    // the subscriber stays.
    const N: usize = 600;
    const SIZE: usize = 40 * 1024;
    let b = TestBroker::start_with(1, |c| {
        c.send_queue_limit = 64 * 1024;
        c.max_queued_qos0_bytes = 1 << 20;
    });
    let (mut slow, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "big-slow", 0, true),
    );
    subscribe(&mut slow, 1, "big/#", QoS::AtMostOnce);
    flood(b.addr, "big-flooder", "big/t", N, SIZE);
    let drops = b.metric("slow_consumer_drops");
    let received = read_backlog(&mut slow, SIZE);
    assert!(drops > 0);
    assert_eq!(received + drops, N as u64);
}

#[test]
fn a_qos0_message_larger_than_the_send_queue_limit_reaches_an_idle_subscriber() {
    // The socket queue is empty: nothing is congested, so the message is delivered (QoS 0
    // is dropped on congestion, not for its size; max_packet_size bounds the size).
    let b = TestBroker::start_with(1, |c| c.send_queue_limit = 16 * 1024);
    let (mut sub, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "idle-sub", 30, true),
    );
    subscribe(&mut sub, 1, "large/t", QoS::AtMostOnce);
    let (mut p, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "large-pub", 30, true),
    );
    let big = "L".repeat(100 * 1024);
    for _ in 0..3 {
        p.send(&publish("large/t", &big, QoS::AtMostOnce, 0));
        let got = recv_publish(&mut sub, T).expect("delivered");
        assert_eq!(got.payload.len(), big.len());
    }
    sub.send(&Packet::PingReq);
    assert_eq!(sub.recv(T), Some(Packet::PingResp), "still connected");
}

#[test]
fn publisher_that_never_reads_its_acks_is_disconnected() {
    // PUBACKs cannot be dropped: a QoS 1 publisher that never reads them fills its socket
    // queue and is disconnected (counted), the broker and others carry on.
    let b = TestBroker::start_with(1, |c| c.send_queue_limit = 16 * 1024);
    // A small receive buffer so the kernel holds few PUBACKs (set before connect).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&b.addr.into()).unwrap();
    let mut p = Raw::from_stream(sock.into(), ProtocolVersion::V311);
    p.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V311,
        "deaf-pub",
        0,
        true,
    ))));
    let mut bytes = bytes::BytesMut::new();
    for i in 0..1000u16 {
        encode_packet(
            &publish("deaf/t", "x", QoS::AtLeastOnce, i + 1),
            ProtocolVersion::V311,
            &mut bytes,
        );
    }
    let start = std::time::Instant::now();
    let mut sent = 0;
    while b.metric("slow_consumer_disconnects") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not disconnected after {sent} QoS 1 publishes"
        );
        if p.send_bytes(&bytes).is_err() {
            break;
        }
        sent += 1000;
    }
    let gone = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        b.metric("slow_consumer_disconnects") == 1
    });
    assert!(gone, "counted as a slow-consumer disconnect");
    eprintln!("deaf QoS 1 publisher disconnected; it had written {sent} publishes by then");
    bystander_still_works(&b);
}

#[test]
fn qos1_flood_into_a_full_worker_mailbox_pauses_the_publisher_and_loses_nothing() {
    // A mailbox limit of 1 byte: every QoS 1 message handed to the other worker finds the
    // mailbox over its limit. QoS 1 must not be dropped, so the broker stops reading from the
    // publisher (TCP pushes back on it) until the other worker has drained its mailbox, then
    // reads on. Every message arrives, once, in order; nothing is dropped.
    const N: usize = 2000;
    const SIZE: usize = 512;
    let b = TestBroker::start_with(2, |c| {
        c.worker_mailbox_limit = 1;
        c.max_queued_messages = 100_000;
    });
    let (mut sub, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "mb-sub", 0, true),
    );
    subscribe(&mut sub, 1, "mb/t", QoS::AtLeastOnce);
    // The subscriber reads and acknowledges on its own thread.
    let subscriber = std::thread::spawn(move || {
        let mut seen = Vec::with_capacity(N);
        while seen.len() < N {
            match sub.recv(Duration::from_secs(10)) {
                Some(Packet::Publish(p)) => {
                    let text = std::str::from_utf8(&p.payload).unwrap();
                    let i: usize = text.split(':').next().unwrap().parse().unwrap();
                    seen.push(i);
                    if p.qos == QoS::AtLeastOnce {
                        sub.send(&Packet::PubAck(PubResp::new(p.packet_id)));
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        seen
    });
    let (mut p, _) = connect(
        b.worker_addrs[1],
        connect_packet(ProtocolVersion::V311, "mb-pub", 0, true),
    );
    let reader = count_pubacks(&p, N);
    for i in 0..N {
        let mut payload = format!("{i}:");
        payload.push_str(&"m".repeat(SIZE - payload.len()));
        p.send(&publish("mb/t", &payload, QoS::AtLeastOnce, i as u16 + 1));
    }
    assert_eq!(reader.join().unwrap(), N, "every PUBLISH acknowledged");
    let seen = subscriber.join().unwrap();
    assert_eq!(seen.len(), N, "every message delivered");
    assert!(
        seen.iter().enumerate().all(|(k, &i)| k == i),
        "in order, no duplicates"
    );
    let paused = b.metric("publishers_paused");
    assert!(paused > 0, "the publisher was paused");
    assert_eq!(b.metric("mailbox_drops"), 0);
    assert_eq!(b.metric("queue_drops"), 0);
    eprintln!("QoS 1 flood through a 1-byte mailbox limit: {N} delivered, publisher paused {paused} times");
    bystander_still_works(&b);
}
