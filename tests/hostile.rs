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
