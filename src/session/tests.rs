//! Unit tests of the connection state machine: one rule per test, fake clock = t0 + offsets.
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::*;
use crate::protocol::*;

// ----------------------------------------------------------------------------------------------
// helpers
// ----------------------------------------------------------------------------------------------

fn bs(s: &str) -> ByteString {
    ByteString::from(s)
}

fn connect(version: ProtocolVersion, id: &str, clean: bool, ka: u16) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: ka,
        client_id: bs(id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn will(topic: &str, delay: Option<u32>) -> Will {
    Will {
        topic: bs(topic),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..Default::default()
        },
    }
}

fn publish(topic: &str, qos: QoS, id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: bs(topic),
        packet_id: id,
        payload: Bytes::from_static(b"hello"),
        properties: PublishProperties::default(),
    }
}

fn msg(topic: &str, qos: QoS) -> Message {
    Message::new(MessageData {
        topic: bs(topic),
        payload: Bytes::from_static(b"payload"),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        publisher: None,
    })
}

fn delivery(qos: QoS) -> Delivery {
    Delivery {
        qos,
        ..Default::default()
    }
}

fn subscribe(id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id,
        filters: filters
            .iter()
            .map(|(f, q)| {
                (
                    bs(f),
                    SubscriptionOptions {
                        qos: *q,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        properties: SubscribeProperties::default(),
    })
}

fn ack(id: u16) -> PubResp {
    PubResp::new(id)
}

struct H {
    c: Connection,
    t0: Instant,
}

impl H {
    fn new(limits: ProtocolLimits) -> H {
        let t0 = Instant::now();
        H {
            c: Connection::new(Arc::new(limits), t0),
            t0,
        }
    }
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn handle(&mut self, p: Packet, ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let now = self.at(ms);
        self.c.handle(p, now, &mut out);
        out
    }
    fn connect(&mut self, c: Connect) -> Vec<Action> {
        self.handle(Packet::Connect(Box::new(c)), 0)
    }
    fn accept(&mut self, session: Option<Session>, assigned: Option<&str>) -> Vec<Action> {
        let mut out = Vec::new();
        let now = self.at(0);
        self.c
            .accept_connect(session, assigned.map(bs), now, &mut out);
        out
    }
    fn deliver(&mut self, m: &Message, d: &Delivery, ms: u64, can_write: bool) -> Vec<Action> {
        let mut out = Vec::new();
        let now = self.at(ms);
        self.c.deliver(m, d, now, can_write, &mut out);
        out
    }
    fn timer(&mut self, ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let now = self.at(ms);
        self.c.on_timer(now, &mut out);
        out
    }
}

/// A connected client (CONNECT accepted with a new session), output cleared.
fn connected(limits: ProtocolLimits, c: Connect) -> H {
    let mut h = H::new(limits);
    let out = h.connect(c);
    assert!(matches!(out.as_slice(), [Action::Connect(_)]), "{out:?}");
    let out = h.accept(None, Some("assigned"));
    assert!(matches!(
        out.first(),
        Some(Action::Send(Packet::ConnAck(_)))
    ));
    h
}

fn v5(ka: u16) -> H {
    connected(
        ProtocolLimits::default(),
        connect(ProtocolVersion::V5, "c1", true, ka),
    )
}

fn v3(ka: u16) -> H {
    connected(
        ProtocolLimits::default(),
        connect(ProtocolVersion::V311, "c1", true, ka),
    )
}

fn sent(out: &[Action]) -> Vec<&Packet> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn connack_of(out: &[Action]) -> &ConnAck {
    match out.iter().find_map(|a| match a {
        Action::Send(Packet::ConnAck(c)) => Some(c),
        _ => None,
    }) {
        Some(c) => c,
        None => panic!("no CONNACK in {out:?}"),
    }
}

/// The Close action: (reason, will).
fn close_of(out: &[Action]) -> (Option<ReasonCode>, Option<&PendingWill>) {
    let closes: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Close { reason, will } => Some((*reason, will.as_ref())),
            _ => None,
        })
        .collect();
    assert_eq!(closes.len(), 1, "expected exactly one Close in {out:?}");
    assert!(
        matches!(out.last(), Some(Action::Close { .. })),
        "Close must be last: {out:?}"
    );
    closes[0]
}

fn has_close(out: &[Action]) -> bool {
    out.iter().any(|a| matches!(a, Action::Close { .. }))
}

fn disconnect_sent(out: &[Action]) -> Option<ReasonCode> {
    out.iter().find_map(|a| match a {
        Action::Send(Packet::Disconnect(d)) => Some(d.reason),
        _ => None,
    })
}

fn published(out: &[Action]) -> Vec<&Message> {
    out.iter()
        .filter_map(|a| match a {
            Action::Publish(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn publishes_sent(out: &[Action]) -> Vec<&Publish> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send(Packet::Publish(p)) => Some(p),
            _ => None,
        })
        .collect()
}

fn with_will(mut c: Connect, w: Will, expiry: Option<u32>) -> Connect {
    c.will = Some(w);
    c.properties.session_expiry_interval = expiry;
    c
}

// ----------------------------------------------------------------------------------------------
// CONNECT phase
// ----------------------------------------------------------------------------------------------

#[test]
fn first_packet_not_connect_closes_without_connack() {
    let mut h = H::new(ProtocolLimits::default());
    let out = h.handle(Packet::PingReq, 0);
    assert!(sent(&out).is_empty());
    let (_, will) = close_of(&out);
    assert!(will.is_none());
    assert!(h.c.is_closed());
}

#[test]
fn connect_emits_request_with_effective_values() {
    let mut h = H::new(ProtocolLimits::default());
    let mut c = connect(ProtocolVersion::V5, "dev", false, 30);
    c.username = Some(bs("u"));
    c.password = Some(Bytes::from_static(b"p"));
    c.properties.session_expiry_interval = Some(120);
    let out = h.connect(c);
    match out.as_slice() {
        [Action::Connect(r)] => {
            assert_eq!(r.client_id, "dev");
            assert!(!r.clean_start);
            assert_eq!(r.session_expiry, 120);
            assert_eq!(r.keep_alive, 30);
            assert_eq!(r.version, ProtocolVersion::V5);
            assert_eq!(r.username.as_deref(), Some("u"));
            assert_eq!(r.password.as_deref(), Some(&b"p"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert!(!h.c.is_connected());
}

#[test]
fn connack_v5_advertises_limits() {
    let limits = ProtocolLimits {
        receive_maximum: 10,
        max_packet_size: 4096,
        topic_alias_maximum: 5,
        max_qos: QoS::AtLeastOnce,
        retain_available: false,
        wildcard_available: false,
        shared_available: false,
        sub_ids_available: false,
        ..Default::default()
    };
    let mut h = H::new(limits);
    h.connect(connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.accept(None, None);
    let ca = connack_of(&out);
    assert_eq!(ca.code, ReasonCode::SUCCESS);
    assert!(!ca.session_present);
    let p = &ca.properties;
    assert_eq!(p.receive_maximum, Some(10));
    assert_eq!(p.maximum_packet_size, Some(4096));
    assert_eq!(p.topic_alias_maximum, Some(5));
    assert_eq!(p.maximum_qos, Some(1));
    assert_eq!(p.retain_available, Some(0));
    assert_eq!(p.wildcard_subscription_available, Some(0));
    assert_eq!(p.shared_subscription_available, Some(0));
    assert_eq!(p.subscription_identifiers_available, Some(0));
    assert!(h.c.is_connected());
}

#[test]
fn connack_v5_omits_defaults() {
    let mut h = H::new(ProtocolLimits::default());
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.session_expiry_interval = Some(60);
    h.connect(c);
    let out = h.accept(None, None);
    let p = &connack_of(&out).properties;
    assert_eq!(p.server_keep_alive, None);
    assert_eq!(p.session_expiry_interval, None);
    assert_eq!(p.receive_maximum, None);
    assert_eq!(p.maximum_qos, None);
    assert_eq!(p.retain_available, None);
    assert_eq!(p.assigned_client_identifier, None);
}

#[test]
fn connack_v311_has_no_properties() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V311, "c", true, 10));
    let out = h.accept(None, None);
    assert_eq!(connack_of(&out).properties, ConnAckProperties::default());
}

// ----------------------------------------------------------------------------------------------
// MQTT 3.1 (MQIsdp, level 3)
// ----------------------------------------------------------------------------------------------

const V31: ProtocolVersion = ProtocolVersion::V31;

#[test]
fn v31_connect_accepted_as_v311() {
    let mut h = H::new(ProtocolLimits::default());
    let out = h.connect(connect(V31, "c31", true, 10));
    assert!(matches!(&out[..], [Action::Connect(r)] if r.version == V31));
    let out = h.accept(None, None);
    assert_eq!(connack_of(&out).code, ReasonCode::SUCCESS);
    assert_eq!(connack_of(&out).properties, ConnAckProperties::default());
    assert_eq!(h.c.version(), Some(V31));
}

#[test]
fn v31_empty_client_id_refused_0x02_section_3_1() {
    // Even with Clean Session = 1 (3.1 has no server-assigned ids).
    for clean in [true, false] {
        let mut h = H::new(ProtocolLimits::default());
        let out = h.connect(connect(V31, "", clean, 10));
        assert_eq!(
            connack_of(&out).code,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
        );
        assert_eq!(connack_of(&out).code.to_v311_connack(), 0x02);
        assert!(has_close(&out));
    }
}

#[test]
fn v31_client_id_over_23_bytes_relaxed_by_default_refused_when_strict() {
    let long = "abcdefghijklmnopqrstuvwxyz0123";
    let mut h = H::new(ProtocolLimits::default());
    let out = h.connect(connect(V31, long, true, 10));
    assert!(matches!(&out[..], [Action::Connect(_)]), "{out:?}");
    let strict = ProtocolLimits {
        v31_strict_client_id: true,
        ..Default::default()
    };
    let mut h = H::new(strict.clone());
    let out = h.connect(connect(V31, long, true, 10));
    assert_eq!(
        connack_of(&out).code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    );
    // 23 bytes pass, and 3.1.1 is not affected.
    let mut h = H::new(strict.clone());
    let out = h.connect(connect(V31, &long[..23], true, 10));
    assert!(matches!(&out[..], [Action::Connect(_)]), "{out:?}");
    let mut h = H::new(strict);
    let out = h.connect(connect(ProtocolVersion::V311, long, true, 10));
    assert!(matches!(&out[..], [Action::Connect(_)]), "{out:?}");
}

#[test]
fn v31_connack_has_no_session_present() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(V31, "c", false, 10));
    let out = h.accept(Some(Session::new(bs("c"), V31)), None);
    assert!(!connack_of(&out).session_present);
    // The session is resumed all the same.
    assert!(h.c.is_connected());
}

#[test]
fn v31_refused_filter_closes_nothing_applied_section_3_9() {
    let mut h = connected(ProtocolLimits::default(), connect(V31, "c", true, 10));
    let out = h.handle(
        subscribe(1, &[("ok", QoS::AtLeastOnce), ("a/#/b", QoS::AtMostOnce)]),
        1,
    );
    assert!(sent(&out).is_empty(), "no SUBACK, no DISCONNECT: {out:?}");
    assert!(!out.iter().any(|a| matches!(a, Action::Subscribe { .. })));
    assert_eq!(close_of(&out).0, Some(ReasonCode::TOPIC_FILTER_INVALID));
    assert_eq!(h.c.session().map(|s| s.subscriptions().count()), Some(0));
    // All granted: a normal SUBACK.
    let mut h = connected(ProtocolLimits::default(), connect(V31, "c", true, 10));
    let out = h.handle(subscribe(1, &[("ok", QoS::AtLeastOnce)]), 1);
    assert_eq!(suback_of(&out).reasons, vec![ReasonCode(1)]);
}

#[test]
fn second_connect_is_protocol_error_v5() {
    let mut h = connected(
        ProtocolLimits::default(),
        with_will(
            connect(ProtocolVersion::V5, "c", true, 10),
            will("w", None),
            None,
        ),
    );
    let out = h.handle(
        Packet::Connect(Box::new(connect(ProtocolVersion::V5, "c", true, 10))),
        5,
    );
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PROTOCOL_ERROR));
    let (reason, will) = close_of(&out);
    assert_eq!(reason, Some(ReasonCode::PROTOCOL_ERROR));
    assert!(will.is_some(), "protocol error publishes the will");
    assert!(!out.iter().any(|a| matches!(a, Action::Connect(_))));
}

#[test]
fn second_connect_v311_closes_without_disconnect_packet() {
    let mut h = v3(10);
    let out = h.handle(
        Packet::Connect(Box::new(connect(ProtocolVersion::V311, "c", true, 10))),
        5,
    );
    assert!(sent(&out).is_empty());
    assert!(has_close(&out));
}

#[test]
fn second_connect_before_connack_closes() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.handle(
        Packet::Connect(Box::new(connect(ProtocolVersion::V5, "c", true, 10))),
        1,
    );
    assert!(sent(&out).is_empty(), "no DISCONNECT before CONNACK");
    assert!(has_close(&out));
    // The broker's late answer is ignored.
    assert!(h.accept(None, None).is_empty());
}

#[test]
fn connect_timeout_closes_silently() {
    let mut h = H::new(ProtocolLimits::default());
    assert_eq!(h.c.deadline(), Some(h.at(10_000)));
    assert!(h.timer(9_999).is_empty());
    let out = h.timer(10_000);
    assert!(sent(&out).is_empty());
    let (_, will) = close_of(&out);
    assert!(will.is_none());
    assert_eq!(h.c.deadline(), None);
}

#[test]
fn connect_timeout_configurable() {
    let mut h = H::new(ProtocolLimits {
        connect_timeout: Duration::from_secs(3),
        ..Default::default()
    });
    assert!(h.timer(2_999).is_empty());
    assert!(has_close(&h.timer(3_000)));
}

#[test]
fn connect_timeout_still_applies_while_broker_decides() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", true, 0));
    assert_eq!(h.c.deadline(), Some(h.at(10_000)));
    assert!(has_close(&h.timer(10_000)));
}

#[test]
fn partial_bytes_do_not_extend_connect_timeout() {
    let mut h = H::new(ProtocolLimits::default());
    h.c.on_bytes_received(h.at(9_000));
    assert!(has_close(&h.timer(10_000)));
}

#[test]
fn v311_empty_client_id_with_persistent_session_refused_0x02() {
    let mut h = H::new(ProtocolLimits::default());
    let out = h.connect(connect(ProtocolVersion::V311, "", false, 10));
    let ca = connack_of(&out);
    assert_eq!(ca.code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert_eq!(ca.code.to_v311_connack(), 0x02);
    assert!(!out.iter().any(|a| matches!(a, Action::Connect(_))));
    assert!(has_close(&out));
}

#[test]
fn v311_empty_client_id_clean_session_gets_assigned_id() {
    let mut h = H::new(ProtocolLimits::default());
    let out = h.connect(connect(ProtocolVersion::V311, "", true, 10));
    assert!(matches!(&out[..], [Action::Connect(r)] if r.client_id.is_empty()));
    let out = h.accept(None, Some("ringmq-0-7"));
    assert_eq!(connack_of(&out).code, ReasonCode::SUCCESS);
    assert_eq!(h.c.client_id().map(|s| &s[..]), Some("ringmq-0-7"));
}

#[test]
fn v5_empty_client_id_assigned_in_connack() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "", true, 10));
    let out = h.accept(None, Some("ringmq-1-2"));
    let ca = connack_of(&out);
    assert_eq!(
        ca.properties.assigned_client_identifier.as_deref(),
        Some("ringmq-1-2")
    );
    assert_eq!(h.c.client_id().map(|s| &s[..]), Some("ringmq-1-2"));
}

#[test]
fn assigned_id_ignored_when_client_sent_one() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "mine", true, 10));
    let out = h.accept(None, Some("other"));
    assert_eq!(connack_of(&out).properties.assigned_client_identifier, None);
    assert_eq!(h.c.client_id().map(|s| &s[..]), Some("mine"));
}

#[test]
fn empty_client_id_without_assigned_id_refused() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "", true, 10));
    let out = h.accept(None, None);
    assert_eq!(
        connack_of(&out).code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    );
    assert!(has_close(&out));
}

#[test]
fn generated_client_ids_are_deterministic_and_distinct() {
    assert_eq!(generate_client_id(3, 9), generate_client_id(3, 9));
    assert_ne!(generate_client_id(3, 9), generate_client_id(3, 10));
    assert_ne!(generate_client_id(1, 12), generate_client_id(11, 2));
}

#[test]
fn refuse_connect_sends_connack_and_closes() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(with_will(
        connect(ProtocolVersion::V5, "c", true, 10),
        will("w", None),
        None,
    ));
    let mut out = Vec::new();
    h.c.refuse_connect(ReasonCode::NOT_AUTHORIZED, h.at(1), &mut out);
    assert_eq!(connack_of(&out).code, ReasonCode::NOT_AUTHORIZED);
    let (reason, will) = close_of(&out);
    assert_eq!(reason, Some(ReasonCode::NOT_AUTHORIZED));
    assert!(will.is_none(), "no will for a refused connection");
}

#[test]
fn auth_method_in_connect_refused() {
    let mut h = H::new(ProtocolLimits::default());
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.authentication_method = Some(bs("SCRAM-SHA-1"));
    let out = h.connect(c);
    assert_eq!(connack_of(&out).code, ReasonCode::BAD_AUTHENTICATION_METHOD);
}

#[test]
fn receive_maximum_zero_in_connect_refused() {
    let mut h = H::new(ProtocolLimits::default());
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.receive_maximum = Some(0);
    let out = h.connect(c);
    assert_eq!(connack_of(&out).code, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn will_qos_above_max_refused() {
    let mut h = H::new(ProtocolLimits {
        max_qos: QoS::AtMostOnce,
        ..Default::default()
    });
    let out = h.connect(with_will(
        connect(ProtocolVersion::V5, "c", true, 10),
        will("w", None),
        None,
    ));
    assert_eq!(connack_of(&out).code, ReasonCode::QOS_NOT_SUPPORTED);
}

#[test]
fn will_retain_unavailable_refused() {
    let mut h = H::new(ProtocolLimits {
        retain_available: false,
        ..Default::default()
    });
    let mut w = will("w", None);
    w.retain = true;
    let out = h.connect(with_will(
        connect(ProtocolVersion::V5, "c", true, 10),
        w,
        None,
    ));
    assert_eq!(connack_of(&out).code, ReasonCode::RETAIN_NOT_SUPPORTED);
}

#[test]
fn will_payload_format_invalid_refused() {
    let mut h = H::new(ProtocolLimits::default());
    let mut w = will("w", None);
    w.payload = Bytes::from_static(&[0xff, 0xfe]);
    w.properties.payload_format_indicator = Some(1);
    let out = h.connect(with_will(
        connect(ProtocolVersion::V5, "c", true, 10),
        w,
        None,
    ));
    assert_eq!(connack_of(&out).code, ReasonCode::PAYLOAD_FORMAT_INVALID);
}

#[test]
fn pipelined_packets_processed_after_connack() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", true, 10));
    assert!(h
        .handle(Packet::Publish(publish("a/b", QoS::AtLeastOnce, 1)), 1)
        .is_empty());
    let out = h.accept(None, None);
    assert!(matches!(out[0], Action::Send(Packet::ConnAck(_))));
    assert!(matches!(&out[1], Action::Publish(m) if m.topic == "a/b"));
    assert!(matches!(&out[2], Action::Send(Packet::PubAck(r)) if r.packet_id == 1));
}

#[test]
fn too_many_pipelined_packets_close() {
    let mut h = H::new(ProtocolLimits {
        max_pending_before_connack: 2,
        ..Default::default()
    });
    h.connect(connect(ProtocolVersion::V5, "c", true, 10));
    assert!(h.handle(Packet::PingReq, 1).is_empty());
    assert!(h.handle(Packet::PingReq, 1).is_empty());
    let out = h.handle(Packet::PingReq, 1);
    assert!(sent(&out).is_empty());
    assert!(has_close(&out));
}

#[test]
fn refused_connect_drops_pipelined_packets() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", true, 10));
    h.handle(Packet::Publish(publish("a", QoS::AtMostOnce, 0)), 1);
    let mut out = Vec::new();
    h.c.refuse_connect(ReasonCode::BANNED, h.at(1), &mut out);
    assert!(published(&out).is_empty());
    assert_eq!(out.len(), 2);
}

// ----------------------------------------------------------------------------------------------
// Keep alive
// ----------------------------------------------------------------------------------------------

#[test]
fn keepalive_deadline_is_one_and_a_half_times() {
    let h = v5(10);
    assert_eq!(h.c.keep_alive(), 10);
    assert_eq!(h.c.deadline(), Some(h.at(15_000)));
}

#[test]
fn keepalive_one_second_is_1500ms() {
    let mut h = v5(1);
    assert!(h.timer(1_499).is_empty());
    assert!(has_close(&h.timer(1_500)));
}

#[test]
fn keepalive_timeout_v5_sends_0x8d_and_publishes_will() {
    let mut h = connected(
        ProtocolLimits::default(),
        with_will(
            connect(ProtocolVersion::V5, "c", true, 10),
            will("w", None),
            None,
        ),
    );
    assert!(h.timer(14_999).is_empty());
    let out = h.timer(15_000);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
    let (reason, w) = close_of(&out);
    assert_eq!(reason, Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
    let w = w.expect("keep-alive expiry publishes the will");
    assert_eq!(w.delay, Duration::ZERO);
    assert_eq!(w.message.topic, "w");
}

#[test]
fn keepalive_timeout_v311_closes_with_will_no_packet() {
    let mut h = connected(
        ProtocolLimits::default(),
        with_will(
            connect(ProtocolVersion::V311, "c", true, 4),
            will("w", None),
            None,
        ),
    );
    let out = h.timer(6_000);
    assert!(sent(&out).is_empty());
    assert!(close_of(&out).1.is_some());
}

#[test]
fn bytes_received_reset_keepalive_even_partial_packet() {
    let mut h = v5(10);
    h.c.on_bytes_received(h.at(14_000));
    assert_eq!(h.c.deadline(), Some(h.at(29_000)));
    assert!(h.timer(15_000).is_empty());
    assert!(has_close(&h.timer(29_000)));
}

#[test]
fn any_packet_resets_keepalive() {
    let mut h = v5(10);
    h.handle(Packet::Publish(publish("t", QoS::AtMostOnce, 0)), 8_000);
    assert_eq!(h.c.deadline(), Some(h.at(23_000)));
}

#[test]
fn sending_never_resets_keepalive() {
    let mut h = v5(10);
    let d = h.c.deadline();
    h.deliver(
        &msg("t", QoS::AtLeastOnce),
        &delivery(QoS::AtLeastOnce),
        9_000,
        true,
    );
    let mut out = Vec::new();
    h.c.on_writable(h.at(9_500), &mut out);
    assert_eq!(h.c.deadline(), d);
    assert!(has_close(&h.timer(15_000)));
}

#[test]
fn pingreq_answered_and_resets_keepalive() {
    let mut h = v5(10);
    let out = h.handle(Packet::PingReq, 12_000);
    assert_eq!(sent(&out), vec![&Packet::PingResp]);
    assert_eq!(h.c.deadline(), Some(h.at(27_000)));
}

#[test]
fn keepalive_zero_disables_timer() {
    let mut h = v5(0);
    assert_eq!(h.c.deadline(), None);
    assert!(h.timer(10_000_000).is_empty());
    assert!(h.c.is_connected());
}

#[test]
fn keepalive_max_65535_accepted() {
    let h = v5(u16::MAX);
    assert_eq!(h.c.keep_alive(), u16::MAX);
    assert_eq!(h.c.deadline(), Some(h.at(65_535 * 1_500)));
}

#[test]
fn v5_server_keep_alive_sent_and_enforced() {
    let mut h = H::new(ProtocolLimits {
        max_keep_alive: 30,
        ..Default::default()
    });
    h.connect(connect(ProtocolVersion::V5, "c", true, 60));
    let out = h.accept(None, None);
    assert_eq!(connack_of(&out).properties.server_keep_alive, Some(30));
    assert_eq!(h.c.keep_alive(), 30);
    assert_eq!(h.c.deadline(), Some(h.at(45_000)));
}

#[test]
fn v5_keep_alive_zero_policy_forces_value() {
    let mut h = H::new(ProtocolLimits {
        keep_alive_when_zero: Some(20),
        ..Default::default()
    });
    h.connect(connect(ProtocolVersion::V5, "c", true, 0));
    let out = h.accept(None, None);
    assert_eq!(connack_of(&out).properties.server_keep_alive, Some(20));
    assert_eq!(h.c.deadline(), Some(h.at(30_000)));
}

#[test]
fn v311_keep_alive_enforce_policy() {
    let limits = ProtocolLimits {
        max_keep_alive: 30,
        v311_keep_alive_out_of_policy: V311KeepAlivePolicy::Clamp,
        ..Default::default()
    };
    let h = connected(limits, connect(ProtocolVersion::V311, "c", true, 60));
    assert_eq!(h.c.keep_alive(), 30);
    assert_eq!(h.c.deadline(), Some(h.at(45_000)));
}

#[test]
fn v311_keep_alive_accept_policy_keeps_client_value() {
    let limits = ProtocolLimits {
        max_keep_alive: 30,
        ..Default::default()
    };
    let h = connected(limits, connect(ProtocolVersion::V311, "c", true, 60));
    assert_eq!(h.c.keep_alive(), 60);
}

#[test]
fn v311_keep_alive_refuse_policy_connack_0x03() {
    let mut h = H::new(ProtocolLimits {
        max_keep_alive: 30,
        v311_keep_alive_out_of_policy: V311KeepAlivePolicy::Refuse,
        ..Default::default()
    });
    let out = h.connect(connect(ProtocolVersion::V311, "c", true, 60));
    assert_eq!(connack_of(&out).code.to_v311_connack(), 0x03);
    assert!(has_close(&out));
}

// ----------------------------------------------------------------------------------------------
// DISCONNECT and the will
// ----------------------------------------------------------------------------------------------

fn v5_with_will(delay: Option<u32>, expiry: Option<u32>) -> H {
    connected(
        ProtocolLimits::default(),
        with_will(
            connect(ProtocolVersion::V5, "c", false, 10),
            will("w", delay),
            expiry,
        ),
    )
}

#[test]
fn disconnect_normal_discards_will() {
    let mut h = v5_with_will(None, None);
    let out = h.handle(
        Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION)),
        5,
    );
    let (reason, will) = close_of(&out);
    assert_eq!(reason, Some(ReasonCode::NORMAL_DISCONNECTION));
    assert!(will.is_none());
    assert!(sent(&out).is_empty());
}

#[test]
fn disconnect_with_will_0x04_publishes_will() {
    let mut h = v5_with_will(None, None);
    let out = h.handle(
        Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE)),
        5,
    );
    assert!(close_of(&out).1.is_some());
}

#[test]
fn v311_disconnect_discards_will() {
    let mut h = connected(
        ProtocolLimits::default(),
        with_will(
            connect(ProtocolVersion::V311, "c", true, 10),
            will("w", None),
            None,
        ),
    );
    let out = h.handle(Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)), 5);
    assert!(close_of(&out).1.is_none());
}

#[test]
fn disconnect_raising_session_expiry_from_zero_is_protocol_error() {
    let mut h = v5_with_will(None, None);
    let mut d = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    d.properties.session_expiry_interval = Some(100);
    let out = h.handle(Packet::Disconnect(d), 5);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PROTOCOL_ERROR));
    let (reason, will) = close_of(&out);
    assert_eq!(reason, Some(ReasonCode::PROTOCOL_ERROR));
    assert!(
        will.is_some(),
        "the will is published after the protocol error"
    );
    assert_eq!(h.c.session().map(|s| s.session_expiry()), Some(0));
}

#[test]
fn disconnect_may_change_nonzero_session_expiry() {
    let mut h = v5_with_will(None, Some(100));
    let mut d = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    d.properties.session_expiry_interval = Some(500);
    let out = h.handle(Packet::Disconnect(d), 5);
    assert!(sent(&out).is_empty());
    assert_eq!(h.c.take_session().map(|s| s.session_expiry()), Some(500));
}

#[test]
fn disconnect_may_lower_session_expiry_to_zero() {
    let mut h = v5_with_will(None, Some(100));
    let mut d = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    d.properties.session_expiry_interval = Some(0);
    h.handle(Packet::Disconnect(d), 5);
    assert_eq!(h.c.take_session().map(|s| s.session_expiry()), Some(0));
}

#[test]
fn connection_lost_publishes_will() {
    let mut h = v5_with_will(None, None);
    let mut out = Vec::new();
    h.c.connection_lost(h.at(5), &mut out);
    let (reason, will) = close_of(&out);
    assert_eq!(reason, None);
    assert!(will.is_some());
}

#[test]
fn will_delay_applies_when_session_continues() {
    let mut h = v5_with_will(Some(30), Some(100));
    let mut out = Vec::new();
    h.c.connection_lost(h.at(5), &mut out);
    assert_eq!(
        close_of(&out).1.map(|w| w.delay),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn will_delay_bounded_by_session_expiry() {
    let mut h = v5_with_will(Some(30), Some(10));
    let mut out = Vec::new();
    h.c.connection_lost(h.at(5), &mut out);
    assert_eq!(
        close_of(&out).1.map(|w| w.delay),
        Some(Duration::from_secs(10))
    );
}

#[test]
fn will_delay_ignored_when_session_ends_with_connection() {
    let mut h = v5_with_will(Some(30), None);
    let mut out = Vec::new();
    h.c.connection_lost(h.at(5), &mut out);
    assert_eq!(close_of(&out).1.map(|w| w.delay), Some(Duration::ZERO));
}

#[test]
fn will_message_carries_qos_retain_and_properties() {
    let mut w = will("status/c", None);
    w.qos = QoS::ExactlyOnce;
    w.retain = true;
    w.properties.content_type = Some(bs("text/plain"));
    w.properties.message_expiry_interval = Some(60);
    w.properties.correlation_data = Some(Bytes::from_static(b"x"));
    w.properties.user_properties = vec![(bs("k"), bs("v"))];
    let mut h = connected(
        ProtocolLimits::default(),
        with_will(connect(ProtocolVersion::V5, "c", true, 10), w, None),
    );
    let mut out = Vec::new();
    h.c.connection_lost(h.at(1_000), &mut out);
    let m = &close_of(&out).1.expect("will").message;
    assert_eq!(m.topic, "status/c");
    assert_eq!(m.payload, Bytes::from_static(b"gone"));
    assert_eq!(m.qos, QoS::ExactlyOnce);
    assert!(m.retain);
    assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(m.properties.correlation_data.as_deref(), Some(&b"x"[..]));
    assert_eq!(m.properties.user_properties.len(), 1);
    assert_eq!(m.expires_at, Some(h.at(61_000)));
    assert_eq!(m.publisher.as_deref(), Some("c"));
}

#[test]
fn takeover_v5_sends_0x8e_and_clean_start_publishes_will_now() {
    let mut h = v5_with_will(Some(30), Some(100));
    let mut out = Vec::new();
    h.c.take_over(true, h.at(5), &mut out);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::SESSION_TAKEN_OVER));
    let (reason, will) = close_of(&out);
    assert_eq!(reason, Some(ReasonCode::SESSION_TAKEN_OVER));
    assert_eq!(will.map(|w| w.delay), Some(Duration::ZERO));
}

#[test]
fn takeover_with_delay_and_continuing_session_discards_will() {
    let mut h = v5_with_will(Some(30), Some(100));
    let mut out = Vec::new();
    h.c.take_over(false, h.at(5), &mut out);
    assert!(close_of(&out).1.is_none());
    assert!(
        h.c.take_session().is_some(),
        "session handed to the new connection"
    );
}

#[test]
fn takeover_with_zero_session_expiry_publishes_will() {
    let mut h = v5_with_will(Some(30), None);
    let mut out = Vec::new();
    h.c.take_over(false, h.at(5), &mut out);
    assert!(close_of(&out).1.is_some());
}

#[test]
fn takeover_v311_publishes_will_without_packet() {
    let mut h = connected(
        ProtocolLimits::default(),
        with_will(
            connect(ProtocolVersion::V311, "c", false, 10),
            will("w", None),
            None,
        ),
    );
    let mut out = Vec::new();
    h.c.take_over(false, h.at(5), &mut out);
    assert!(sent(&out).is_empty());
    assert!(close_of(&out).1.is_some());
}

#[test]
fn shutdown_v5_sends_0x8b_and_publishes_will_now() {
    let mut h = v5_with_will(Some(30), Some(100));
    let mut out = Vec::new();
    h.c.shutdown(h.at(5), &mut out);
    assert_eq!(
        disconnect_sent(&out),
        Some(ReasonCode::SERVER_SHUTTING_DOWN)
    );
    assert_eq!(close_of(&out).1.map(|w| w.delay), Some(Duration::ZERO));
}

#[test]
fn close_emitted_once_and_later_input_ignored() {
    let mut h = v5_with_will(None, None);
    let out = h.handle(Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)), 5);
    assert!(has_close(&out));
    assert!(h.handle(Packet::PingReq, 6).is_empty());
    let mut out = Vec::new();
    h.c.connection_lost(h.at(7), &mut out);
    h.c.on_timer(h.at(100_000), &mut out);
    h.c.shutdown(h.at(8), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.c.deadline(), None);
}

// ----------------------------------------------------------------------------------------------
// Decode errors
// ----------------------------------------------------------------------------------------------

#[test]
fn decode_error_v5_sends_disconnect_with_reason_and_will() {
    let mut h = v5_with_will(None, None);
    let mut out = Vec::new();
    h.c.on_decode_error(&DecodeError::Malformed("bad varint"), h.at(5), &mut out);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::MALFORMED_PACKET));
    assert!(close_of(&out).1.is_some());
}

#[test]
fn decode_error_too_large_v5_0x95() {
    let mut h = v5(10);
    let mut out = Vec::new();
    h.c.on_decode_error(
        &DecodeError::TooLarge { size: 10, max: 5 },
        h.at(5),
        &mut out,
    );
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PACKET_TOO_LARGE));
}

#[test]
fn decode_error_v311_closes_without_packet() {
    let mut h = v3(10);
    let mut out = Vec::new();
    h.c.on_decode_error(&DecodeError::Protocol("x"), h.at(5), &mut out);
    assert!(sent(&out).is_empty());
    assert!(has_close(&out));
}

#[test]
fn decode_error_before_connect_closes_silently() {
    let mut h = H::new(ProtocolLimits::default());
    let mut out = Vec::new();
    h.c.on_decode_error(&DecodeError::Malformed("x"), h.at(5), &mut out);
    assert!(sent(&out).is_empty());
    assert!(close_of(&out).1.is_none());
}

#[test]
fn unsupported_protocol_version_gets_connack_0x84() {
    let mut h = H::new(ProtocolLimits::default());
    let mut out = Vec::new();
    h.c.on_decode_error(
        &DecodeError::UnsupportedProtocolVersion(3),
        h.at(5),
        &mut out,
    );
    let ca = connack_of(&out);
    assert_eq!(ca.code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    assert_eq!(ca.code.to_v311_connack(), 0x01);
    assert!(has_close(&out));
}

/// Found by the `session` fuzz target: a second CONNECT with an unsupported protocol level
/// (the decoder reports `UnsupportedProtocolVersion`) made a v5 connection send DISCONNECT 0x84,
/// a reason code DISCONNECT does not allow. A second CONNECT is a protocol error.
#[test]
fn second_connect_with_unsupported_level_is_protocol_error() {
    let mut h = v5(10);
    let mut out = Vec::new();
    h.c.on_decode_error(
        &DecodeError::UnsupportedProtocolVersion(3),
        h.at(5),
        &mut out,
    );
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PROTOCOL_ERROR));
    assert_eq!(close_of(&out).0, Some(ReasonCode::PROTOCOL_ERROR));

    // Before CONNACK (the broker is still deciding): closed as a protocol error, nothing sent.
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", true, 10));
    let mut out = Vec::new();
    h.c.on_decode_error(
        &DecodeError::UnsupportedProtocolVersion(3),
        h.at(5),
        &mut out,
    );
    assert!(sent(&out).is_empty());
    assert_eq!(close_of(&out).0, Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn auth_packet_without_auth_method_is_protocol_error() {
    let mut h = v5(10);
    let out = h.handle(
        Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: AuthProperties::default(),
        }),
        5,
    );
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PROTOCOL_ERROR));
    assert!(has_close(&out));
}

#[test]
fn server_only_packet_from_client_is_protocol_error() {
    let mut h = v5(10);
    let out = h.handle(Packet::PingResp, 5);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PROTOCOL_ERROR));
}

// ----------------------------------------------------------------------------------------------
// Sessions
// ----------------------------------------------------------------------------------------------

#[test]
fn session_expiry_absent_is_zero() {
    let mut h = H::new(ProtocolLimits::default());
    let out = h.connect(connect(ProtocolVersion::V5, "c", false, 10));
    assert!(matches!(&out[..], [Action::Connect(r)] if r.session_expiry == 0));
}

#[test]
fn session_expiry_capped_and_reported_in_connack() {
    let mut h = H::new(ProtocolLimits {
        max_session_expiry: 3600,
        ..Default::default()
    });
    let mut c = connect(ProtocolVersion::V5, "c", false, 10);
    c.properties.session_expiry_interval = Some(u32::MAX);
    let out = h.connect(c);
    assert!(matches!(&out[..], [Action::Connect(r)] if r.session_expiry == 3600));
    let out = h.accept(None, None);
    assert_eq!(
        connack_of(&out).properties.session_expiry_interval,
        Some(3600)
    );
    assert_eq!(h.c.session().map(|s| s.session_expiry()), Some(3600));
}

#[test]
fn v311_clean_session_flag_sets_expiry() {
    let limits = ProtocolLimits {
        v311_persistent_session_expiry: 7200,
        ..Default::default()
    };
    let mut h = H::new(limits.clone());
    let out = h.connect(connect(ProtocolVersion::V311, "c", false, 10));
    assert!(matches!(&out[..], [Action::Connect(r)] if r.session_expiry == 7200));
    let mut h = H::new(limits);
    let out = h.connect(connect(ProtocolVersion::V311, "c", true, 10));
    assert!(matches!(&out[..], [Action::Connect(r)] if r.session_expiry == 0 && r.clean_start));
}

/// A session with one subscription, one QoS 1 and one QoS 2 in flight (the second PUBREC'd),
/// and one queued message, taken from a closed v5 connection.
fn session_with_state() -> Session {
    let limits = ProtocolLimits::default();
    let mut c = connect(ProtocolVersion::V5, "c", false, 10);
    c.properties.session_expiry_interval = Some(100);
    c.properties.receive_maximum = Some(3);
    let mut h = connected(limits, c);
    h.handle(subscribe(1, &[("a/#", QoS::ExactlyOnce)]), 1);
    let d = delivery(QoS::ExactlyOnce);
    h.deliver(&msg("a/1", QoS::AtLeastOnce), &d, 2, true);
    h.deliver(&msg("a/2", QoS::ExactlyOnce), &d, 2, true);
    h.deliver(&msg("a/3", QoS::ExactlyOnce), &d, 2, true);
    h.handle(Packet::PubRec(ack(2)), 3);
    let out = h.deliver(&msg("a/4", QoS::AtLeastOnce), &d, 4, true);
    assert!(publishes_sent(&out).is_empty(), "window of 3 is full");
    let mut out = Vec::new();
    h.c.connection_lost(h.at(5), &mut out);
    let s = h.c.take_session().expect("session");
    assert_eq!(s.inflight_len(), 3);
    assert_eq!(s.queued_len(), 1);
    s
}

#[test]
fn resumed_session_present_and_subscriptions_kept() {
    let s = session_with_state();
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", false, 10));
    let out = h.accept(Some(s), None);
    assert!(connack_of(&out).session_present);
    let sub = h.c.session().and_then(|s| s.subscription("a/#").copied());
    assert_eq!(sub.map(|s| s.options.qos), Some(QoS::ExactlyOnce));
}

#[test]
fn resumed_session_resends_inflight_with_dup_and_pubrel_in_order_then_queue() {
    let s = session_with_state();
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", false, 10));
    let out = h.accept(Some(s), None);
    let packets = sent(&out);
    // CONNACK, PUBLISH a/1 (dup), PUBREL 2, PUBLISH a/3 (dup), then queued a/4 (new).
    assert_eq!(packets.len(), 5, "{packets:?}");
    match (&packets[1], &packets[2], &packets[3], &packets[4]) {
        (Packet::Publish(p1), Packet::PubRel(r), Packet::Publish(p3), Packet::Publish(p4)) => {
            assert!(p1.dup && p1.topic == "a/1" && p1.packet_id == 1);
            assert_eq!(r.packet_id, 2);
            assert!(p3.dup && p3.topic == "a/3" && p3.packet_id == 3);
            assert!(!p4.dup && p4.topic == "a/4");
            assert!(
                ![1, 2, 3].contains(&p4.packet_id),
                "no reuse of in-flight ids"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn resume_resends_only_within_the_new_receive_maximum() {
    // In flight: a/1 (QoS 1, id 1), id 2 waiting for PUBCOMP, a/3 (QoS 2, id 3); queued a/4.
    let mut c = connect(ProtocolVersion::V5, "c", false, 10);
    c.properties.receive_maximum = Some(2);
    let mut h = H::new(ProtocolLimits::default());
    h.connect(c);
    let out = h.accept(Some(session_with_state()), None);
    let packets = sent(&out);
    // Id 2 (PUBREL) and a/1 use the window of 2; a/3 waits.
    assert_eq!(packets.len(), 3, "{packets:?}");
    assert!(matches!(packets[1], Packet::Publish(p) if p.dup && p.packet_id == 1));
    assert!(matches!(packets[2], Packet::PubRel(r) if r.packet_id == 2));
    let out = h.handle(Packet::PubAck(ack(1)), 6);
    let p = publishes_sent(&out);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].dup && p[0].packet_id == 3 && p[0].topic == "a/3",
        "same id, DUP"
    );
    let out = h.handle(Packet::PubComp(ack(2)), 7);
    let p = publishes_sent(&out);
    assert_eq!(p.len(), 1);
    assert!(!p[0].dup && p[0].topic == "a/4", "then the queue");

    // Receive Maximum 1: only the PUBREL; a PUBREC for a waiting id moves it on.
    let mut c = connect(ProtocolVersion::V5, "c", false, 10);
    c.properties.receive_maximum = Some(1);
    let mut h = H::new(ProtocolLimits::default());
    h.connect(c);
    let out = h.accept(Some(session_with_state()), None);
    assert!(publishes_sent(&out).is_empty());
    assert!(matches!(sent(&out)[1], Packet::PubRel(r) if r.packet_id == 2));
    let out = h.handle(Packet::PubRec(ack(3)), 6);
    assert!(matches!(sent(&out)[..], [Packet::PubRel(r)] if r.packet_id == 3));
    let out = h.handle(Packet::PubComp(ack(2)), 7);
    assert!(publishes_sent(&out).is_empty(), "id 3 still unacknowledged");
    let out = h.handle(Packet::PubComp(ack(3)), 8);
    let p = publishes_sent(&out);
    assert!(matches!(&p[..], [p] if p.dup && p.packet_id == 1));
}

#[test]
fn clean_start_discards_offered_session() {
    let s = session_with_state();
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.accept(Some(s), None);
    assert!(!connack_of(&out).session_present);
    assert_eq!(sent(&out).len(), 1);
    let s = h.c.session().expect("session");
    assert_eq!(s.subscriptions().count(), 0);
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn new_session_not_present() {
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c", false, 10));
    assert!(!connack_of(&h.accept(None, None)).session_present);
}

#[test]
fn resumed_queue_delivered_in_order() {
    let limits = ProtocolLimits::default();
    let mut s = Session::new(bs("c"), ProtocolVersion::V5);
    for i in 0..5 {
        assert!(s.deliver_offline(
            &msg(&format!("t/{i}"), QoS::AtLeastOnce),
            &delivery(QoS::AtLeastOnce),
            Instant::now(),
            &limits
        ));
    }
    let mut h = H::new(limits);
    h.connect(connect(ProtocolVersion::V5, "c", false, 10));
    let out = h.accept(Some(s), None);
    let topics: Vec<_> = publishes_sent(&out)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(topics, vec!["t/0", "t/1", "t/2", "t/3", "t/4"]);
}

#[test]
fn resumed_session_gets_new_will() {
    let s = session_with_state();
    let mut h = H::new(ProtocolLimits::default());
    h.connect(with_will(
        connect(ProtocolVersion::V5, "c", false, 10),
        will("new-will", None),
        None,
    ));
    h.accept(Some(s), None);
    assert_eq!(
        h.c.session()
            .and_then(|s| s.will())
            .map(|w| w.topic.to_string()),
        Some("new-will".to_string())
    );
}

#[test]
fn deliver_to_closed_connection_goes_to_session_queue() {
    let mut h = v5(10);
    let mut out = Vec::new();
    h.c.connection_lost(h.at(1), &mut out);
    let out = h.deliver(
        &msg("t", QoS::AtLeastOnce),
        &delivery(QoS::AtLeastOnce),
        2,
        true,
    );
    assert!(out.is_empty());
    assert_eq!(h.c.session().map(|s| s.queued_len()), Some(1));
}

#[test]
fn offline_queue_bounded_by_count_and_bytes() {
    let limits = ProtocolLimits {
        max_queued_messages: 2,
        max_queued_bytes: 1000,
        ..Default::default()
    };
    let now = Instant::now();
    let d = delivery(QoS::AtLeastOnce);
    let mut s = Session::new(bs("c"), ProtocolVersion::V5);
    assert!(s.deliver_offline(&msg("a", QoS::AtLeastOnce), &d, now, &limits));
    assert!(s.deliver_offline(&msg("b", QoS::AtLeastOnce), &d, now, &limits));
    assert!(!s.deliver_offline(&msg("c", QoS::AtLeastOnce), &d, now, &limits));
    assert_eq!(s.stats().dropped_queue_full, 1);

    let big = Message::new(MessageData {
        payload: Bytes::from(vec![0u8; 990]),
        ..(*msg("t", QoS::AtLeastOnce)).clone()
    });
    let mut s = Session::new(bs("c"), ProtocolVersion::V5);
    assert!(s.deliver_offline(&big, &d, now, &limits));
    assert!(!s.deliver_offline(&msg("more", QoS::AtLeastOnce), &d, now, &limits));
    assert_eq!(s.stats().dropped_queue_full, 1);
    assert_eq!(s.queued_bytes(), 991);
}

#[test]
fn offline_qos0_dropped_unless_policy_queues_it() {
    let now = Instant::now();
    let d = delivery(QoS::AtLeastOnce);
    let mut s = Session::new(bs("c"), ProtocolVersion::V5);
    assert!(!s.deliver_offline(
        &msg("a", QoS::AtMostOnce),
        &d,
        now,
        &ProtocolLimits::default()
    ));
    assert_eq!(s.stats().dropped_qos0, 1);
    let limits = ProtocolLimits {
        queue_qos0_offline: true,
        ..Default::default()
    };
    assert!(s.deliver_offline(&msg("a", QoS::AtMostOnce), &d, now, &limits));
}

// ----------------------------------------------------------------------------------------------
// Inbound PUBLISH
// ----------------------------------------------------------------------------------------------

#[test]
fn qos0_publish_routed_without_ack() {
    let mut h = v5(10);
    let out = h.handle(Packet::Publish(publish("a/b", QoS::AtMostOnce, 0)), 1);
    assert_eq!(published(&out).len(), 1);
    assert!(sent(&out).is_empty());
}

#[test]
fn qos1_publish_routed_then_puback() {
    let mut h = v5(10);
    let out = h.handle(Packet::Publish(publish("a/b", QoS::AtLeastOnce, 7)), 1);
    assert!(matches!(&out[0], Action::Publish(m) if m.qos == QoS::AtLeastOnce));
    assert_eq!(sent(&out), vec![&Packet::PubAck(ack(7))]);
}

#[test]
fn qos2_publish_pubrec_pubrel_pubcomp() {
    let mut h = v5(10);
    let out = h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 9)), 1);
    assert_eq!(published(&out).len(), 1);
    assert_eq!(sent(&out), vec![&Packet::PubRec(ack(9))]);
    assert_eq!(h.c.session().map(|s| s.inbound_qos2_len()), Some(1));
    let out = h.handle(Packet::PubRel(ack(9)), 2);
    assert_eq!(sent(&out), vec![&Packet::PubComp(ack(9))]);
    assert_eq!(h.c.session().map(|s| s.inbound_qos2_len()), Some(0));
}

#[test]
fn qos2_duplicate_before_pubrel_not_routed_again() {
    let mut h = v5(10);
    h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 9)), 1);
    let mut dup = publish("a", QoS::ExactlyOnce, 9);
    dup.dup = true;
    let out = h.handle(Packet::Publish(dup), 2);
    assert!(published(&out).is_empty());
    assert_eq!(sent(&out), vec![&Packet::PubRec(ack(9))]);
    // After PUBREL the id is free: a new PUBLISH with it is a new message.
    h.handle(Packet::PubRel(ack(9)), 3);
    let out = h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 9)), 4);
    assert_eq!(published(&out).len(), 1);
}

#[test]
fn pubrel_unknown_id_v5_pubcomp_0x92() {
    let mut h = v5(10);
    let out = h.handle(Packet::PubRel(ack(44)), 1);
    match sent(&out)[..] {
        [Packet::PubComp(r)] => {
            assert_eq!(r.packet_id, 44);
            assert_eq!(r.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
        }
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn pubrel_unknown_id_v311_plain_pubcomp() {
    let mut h = v3(10);
    let out = h.handle(Packet::PubRel(ack(44)), 1);
    assert_eq!(sent(&out), vec![&Packet::PubComp(ack(44))]);
}

#[test]
fn inbound_receive_maximum_exceeded_0x93() {
    let limits = ProtocolLimits {
        receive_maximum: 2,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 1)), 1);
    h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 2)), 1);
    let out = h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 3)), 1);
    assert!(published(&out).is_empty());
    assert_eq!(
        disconnect_sent(&out),
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

#[test]
fn inbound_receive_maximum_frees_on_pubrel() {
    let limits = ProtocolLimits {
        receive_maximum: 1,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 1)), 1);
    h.handle(Packet::PubRel(ack(1)), 2);
    let out = h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 2)), 3);
    assert!(!has_close(&out));
    assert_eq!(published(&out).len(), 1);
}

fn aliased(topic: &str, alias: u16) -> Packet {
    let mut p = publish(topic, QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(alias);
    Packet::Publish(p)
}

#[test]
fn topic_alias_zero_is_0x94() {
    let mut h = v5(10);
    let out = h.handle(aliased("a", 0), 1);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::TOPIC_ALIAS_INVALID));
}

#[test]
fn topic_alias_above_maximum_is_0x94() {
    let mut h = v5(10); // our maximum is 16
    assert!(!has_close(&h.handle(aliased("a", 16), 1)));
    let out = h.handle(aliased("a", 17), 1);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::TOPIC_ALIAS_INVALID));
}

#[test]
fn topic_alias_set_then_used_and_replaced() {
    let mut h = v5(10);
    let out = h.handle(aliased("sensors/1", 3), 1);
    assert_eq!(published(&out)[0].topic, "sensors/1");
    assert_eq!(published(&out)[0].properties.topic_alias, None);
    let out = h.handle(aliased("", 3), 2);
    assert_eq!(published(&out)[0].topic, "sensors/1");
    h.handle(aliased("sensors/2", 3), 3);
    let out = h.handle(aliased("", 3), 4);
    assert_eq!(published(&out)[0].topic, "sensors/2");
}

#[test]
fn empty_topic_with_unknown_alias_is_protocol_error() {
    let mut h = v5(10);
    let out = h.handle(aliased("", 2), 1);
    assert!(published(&out).is_empty());
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn topic_aliases_do_not_survive_the_connection() {
    let s = {
        let mut h = v5(10);
        h.handle(aliased("x", 1), 1);
        let mut out = Vec::new();
        h.c.connection_lost(h.at(2), &mut out);
        h.c.take_session()
    };
    let mut h = H::new(ProtocolLimits::default());
    h.connect(connect(ProtocolVersion::V5, "c1", false, 10));
    h.accept(s, None);
    let out = h.handle(aliased("", 1), 1);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn publish_qos_above_maximum_0x9b() {
    let limits = ProtocolLimits {
        max_qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.handle(Packet::Publish(publish("a", QoS::ExactlyOnce, 1)), 1);
    assert!(published(&out).is_empty());
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::QOS_NOT_SUPPORTED));
}

#[test]
fn retained_publish_when_unavailable_0x9a() {
    let limits = ProtocolLimits {
        retain_available: false,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let mut p = publish("a", QoS::AtMostOnce, 0);
    p.retain = true;
    let out = h.handle(Packet::Publish(p), 1);
    assert!(published(&out).is_empty());
    assert_eq!(
        disconnect_sent(&out),
        Some(ReasonCode::RETAIN_NOT_SUPPORTED)
    );
}

fn bad_utf8(qos: QoS, id: u16) -> Packet {
    let mut p = publish("a", qos, id);
    p.payload = Bytes::from_static(&[0xc3, 0x28]);
    p.properties.payload_format_indicator = Some(1);
    Packet::Publish(p)
}

#[test]
fn payload_format_invalid_qos1_puback_0x99_not_routed() {
    let mut h = v5(10);
    let out = h.handle(bad_utf8(QoS::AtLeastOnce, 4), 1);
    assert!(published(&out).is_empty());
    assert!(matches!(sent(&out)[..], [Packet::PubAck(r)]
        if r.packet_id == 4 && r.reason == ReasonCode::PAYLOAD_FORMAT_INVALID));
    assert!(h.c.is_connected());
}

#[test]
fn payload_format_invalid_qos2_pubrec_0x99_not_kept() {
    let mut h = v5(10);
    let out = h.handle(bad_utf8(QoS::ExactlyOnce, 4), 1);
    assert!(published(&out).is_empty());
    assert!(matches!(sent(&out)[..], [Packet::PubRec(r)]
        if r.reason == ReasonCode::PAYLOAD_FORMAT_INVALID));
    assert_eq!(h.c.session().map(|s| s.inbound_qos2_len()), Some(0));
}

#[test]
fn valid_utf8_with_format_indicator_routed() {
    let mut h = v5(10);
    let mut p = publish("a", QoS::AtLeastOnce, 4);
    p.payload = Bytes::from("héllo");
    p.properties.payload_format_indicator = Some(1);
    let out = h.handle(Packet::Publish(p), 1);
    assert_eq!(published(&out).len(), 1);
}

#[test]
fn inbound_message_expiry_publisher_and_properties() {
    let mut h = v5(10);
    let mut p = publish("a", QoS::AtMostOnce, 0);
    p.properties.message_expiry_interval = Some(30);
    p.properties.content_type = Some(bs("json"));
    let out = h.handle(Packet::Publish(p), 2_000);
    let m = published(&out)[0];
    assert_eq!(m.expires_at, Some(h.at(32_000)));
    assert_eq!(m.publisher.as_deref(), Some("c1"));
    assert_eq!(m.properties.content_type.as_deref(), Some("json"));
}

// ----------------------------------------------------------------------------------------------
// Outbound delivery
// ----------------------------------------------------------------------------------------------

#[test]
fn delivery_qos_is_minimum_of_message_and_granted() {
    let mut h = v5(10);
    let out = h.deliver(
        &msg("t", QoS::ExactlyOnce),
        &delivery(QoS::AtLeastOnce),
        1,
        true,
    );
    assert_eq!(publishes_sent(&out)[0].qos, QoS::AtLeastOnce);
    let out = h.deliver(
        &msg("t", QoS::AtMostOnce),
        &delivery(QoS::ExactlyOnce),
        1,
        true,
    );
    let p = publishes_sent(&out)[0];
    assert_eq!(p.qos, QoS::AtMostOnce);
    assert_eq!(p.packet_id, 0);
}

#[test]
fn packet_ids_never_reused_while_in_flight() {
    let mut h = v5(10);
    let d = delivery(QoS::AtLeastOnce);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = h.deliver(&msg("t", QoS::AtLeastOnce), &d, 1, true);
        ids.push(publishes_sent(&out)[0].packet_id);
    }
    h.handle(Packet::PubAck(ack(ids[1])), 2);
    for _ in 0..70_000u32 {
        let out = h.deliver(&msg("t", QoS::AtLeastOnce), &d, 3, true);
        let id = publishes_sent(&out)[0].packet_id;
        assert!(
            id != 0 && id != ids[0] && id != ids[2],
            "reused in-flight id {id}"
        );
        h.handle(Packet::PubAck(ack(id)), 3);
    }
}

#[test]
fn client_receive_maximum_respected_and_acks_release() {
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.receive_maximum = Some(2);
    let mut h = connected(ProtocolLimits::default(), c);
    let d = delivery(QoS::AtLeastOnce);
    let mut sent_ids = Vec::new();
    for i in 0..4 {
        let out = h.deliver(&msg(&format!("t/{i}"), QoS::AtLeastOnce), &d, 1, true);
        sent_ids.extend(publishes_sent(&out).iter().map(|p| p.packet_id));
    }
    assert_eq!(sent_ids.len(), 2);
    assert_eq!(h.c.session().map(|s| s.queued_len()), Some(2));
    let out = h.handle(Packet::PubAck(ack(sent_ids[0])), 2);
    let p = publishes_sent(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].topic, "t/2");
}

#[test]
fn max_inflight_out_caps_client_receive_maximum() {
    let limits = ProtocolLimits {
        max_inflight_out: 1,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let d = delivery(QoS::AtLeastOnce);
    assert_eq!(
        publishes_sent(&h.deliver(&msg("a", QoS::AtLeastOnce), &d, 1, true)).len(),
        1
    );
    assert!(publishes_sent(&h.deliver(&msg("b", QoS::AtLeastOnce), &d, 1, true)).is_empty());
}

#[test]
fn qos0_not_limited_by_receive_maximum() {
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.receive_maximum = Some(1);
    let mut h = connected(ProtocolLimits::default(), c);
    h.deliver(
        &msg("a", QoS::AtLeastOnce),
        &delivery(QoS::AtLeastOnce),
        1,
        true,
    );
    let out = h.deliver(
        &msg("b", QoS::AtMostOnce),
        &delivery(QoS::AtLeastOnce),
        1,
        true,
    );
    assert_eq!(publishes_sent(&out).len(), 1);
}

#[test]
fn outbound_qos2_flow_frees_slot_on_pubcomp() {
    let mut h = v5(10);
    let out = h.deliver(
        &msg("t", QoS::ExactlyOnce),
        &delivery(QoS::ExactlyOnce),
        1,
        true,
    );
    let id = publishes_sent(&out)[0].packet_id;
    let out = h.handle(Packet::PubRec(ack(id)), 2);
    assert_eq!(sent(&out), vec![&Packet::PubRel(ack(id))]);
    assert_eq!(h.c.session().map(|s| s.inflight_len()), Some(1));
    h.handle(Packet::PubComp(ack(id)), 3);
    assert_eq!(h.c.session().map(|s| s.inflight_len()), Some(0));
}

#[test]
fn outbound_pubrec_with_error_frees_slot() {
    let mut h = v5(10);
    let out = h.deliver(
        &msg("t", QoS::ExactlyOnce),
        &delivery(QoS::ExactlyOnce),
        1,
        true,
    );
    let id = publishes_sent(&out)[0].packet_id;
    let mut r = ack(id);
    r.reason = ReasonCode::QUOTA_EXCEEDED;
    let out = h.handle(Packet::PubRec(r), 2);
    assert!(sent(&out).is_empty());
    assert_eq!(h.c.session().map(|s| s.inflight_len()), Some(0));
}

/// A connected v5 or 3.1.1 client with one outbound message in flight at `qos`; its id.
fn with_inflight(v: ProtocolVersion, qos: QoS) -> (H, u16) {
    let mut h = if v.is_v5() { v5(10) } else { v3(10) };
    let out = h.deliver(&msg("t", qos), &delivery(qos), 1, true);
    let id = publishes_sent(&out)[0].packet_id;
    (h, id)
}

/// The ack closes the connection as a protocol error: MQTT 5 DISCONNECT 0x82, 3.1.1 a plain
/// close (section 4.13).
fn assert_ack_protocol_error(v: ProtocolVersion, out: &[Action]) {
    let (reason, _) = close_of(out);
    assert_eq!(reason, Some(ReasonCode::PROTOCOL_ERROR), "{out:?}");
    if v.is_v5() {
        assert_eq!(disconnect_sent(out), Some(ReasonCode::PROTOCOL_ERROR));
    } else {
        assert!(sent(out).is_empty(), "3.1.1: close only: {out:?}");
    }
}

#[test]
fn pubrec_for_qos1_id_is_protocol_error_4_13() {
    for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let (mut h, id) = with_inflight(v, QoS::AtLeastOnce);
        let out = h.handle(Packet::PubRec(ack(id)), 2);
        assert_ack_protocol_error(v, &out);
    }
}

#[test]
fn puback_for_qos2_id_is_protocol_error_4_13() {
    for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
        // Awaiting PUBREC.
        let (mut h, id) = with_inflight(v, QoS::ExactlyOnce);
        let out = h.handle(Packet::PubAck(ack(id)), 2);
        assert_ack_protocol_error(v, &out);
        // Awaiting PUBCOMP.
        let (mut h, id) = with_inflight(v, QoS::ExactlyOnce);
        h.handle(Packet::PubRec(ack(id)), 2);
        let out = h.handle(Packet::PubAck(ack(id)), 3);
        assert_ack_protocol_error(v, &out);
    }
}

#[test]
fn pubcomp_before_pubrel_is_protocol_error_4_13() {
    for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let (mut h, id) = with_inflight(v, QoS::ExactlyOnce);
        let out = h.handle(Packet::PubComp(ack(id)), 2);
        assert_ack_protocol_error(v, &out);
        // A PUBCOMP for a QoS 1 id fits no state either.
        let (mut h, id) = with_inflight(v, QoS::AtLeastOnce);
        let out = h.handle(Packet::PubComp(ack(id)), 2);
        assert_ack_protocol_error(v, &out);
    }
}

#[test]
fn duplicate_pubrec_after_pubrel_resends_pubrel_4_3_3() {
    let (mut h, id) = with_inflight(ProtocolVersion::V5, QoS::ExactlyOnce);
    h.handle(Packet::PubRec(ack(id)), 2);
    let out = h.handle(Packet::PubRec(ack(id)), 3);
    assert_eq!(sent(&out), vec![&Packet::PubRel(ack(id))]);
    assert!(h.c.is_connected());
}

#[test]
fn pubrel_for_completed_or_unknown_id_answered_pubcomp_not_closed() {
    // A duplicate PUBREL for a completed exchange cannot be told from a PUBREL for an id that
    // never got a PUBREC (no record is kept of completed ids): both get PUBCOMP (0x92 in MQTT
    // 5), the connection stays (section 4.3.3, [MQTT-4.3.3-11]).
    let mut h = v5(10);
    h.handle(Packet::Publish(publish("t", QoS::ExactlyOnce, 9)), 1);
    let out = h.handle(Packet::PubRel(ack(9)), 2);
    assert_eq!(sent(&out), vec![&Packet::PubComp(ack(9))]);
    let out = h.handle(Packet::PubRel(ack(9)), 3);
    assert!(matches!(sent(&out)[..], [Packet::PubComp(r)]
        if r.packet_id == 9 && r.reason == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND));
    let out = h.handle(Packet::PubRel(ack(77)), 4);
    assert!(matches!(sent(&out)[..], [Packet::PubComp(r)]
        if r.packet_id == 77 && r.reason == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND));
    assert!(h.c.is_connected());
}

/// Acks for ids not in flight (never used, or acknowledged already: clients resend acks after
/// a reconnect) are ignored, never an error.
#[test]
fn unknown_ack_ids_ignored() {
    let mut h = v5(10);
    assert!(h.handle(Packet::PubAck(ack(5)), 1).is_empty());
    assert!(h.handle(Packet::PubComp(ack(5)), 1).is_empty());
    assert!(h.c.is_connected());
}

#[test]
fn unknown_pubrec_v5_answered_pubrel_0x92() {
    let mut h = v5(10);
    let out = h.handle(Packet::PubRec(ack(5)), 1);
    assert!(matches!(sent(&out)[..], [Packet::PubRel(r)]
        if r.reason == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND));
}

#[test]
fn client_maximum_packet_size_drops_message() {
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.maximum_packet_size = Some(30);
    let mut h = connected(ProtocolLimits::default(), c);
    // "t" + 7-byte payload, QoS 1: 1 + 1 + (2+1 + 2 + 1 + 7) = 15 bytes.
    let out = h.deliver(
        &msg("t", QoS::AtLeastOnce),
        &delivery(QoS::AtLeastOnce),
        1,
        true,
    );
    assert_eq!(publishes_sent(&out).len(), 1);
    let long = msg(&"x".repeat(40), QoS::AtLeastOnce);
    let out = h.deliver(&long, &delivery(QoS::AtLeastOnce), 1, true);
    assert!(publishes_sent(&out).is_empty());
    let s = h.c.session().expect("session");
    assert_eq!(s.stats().dropped_too_large, 1);
    assert_eq!(s.inflight_len(), 1, "a dropped message takes no packet id");
}

/// CONNECT with the client's Maximum Packet Size `max` and, accepted, what the broker did.
fn accept_with_max(max: Option<u32>, id: &str) -> (H, Vec<Action>) {
    let mut c = connect(ProtocolVersion::V5, id, true, 10);
    c.properties.maximum_packet_size = max;
    let mut h = H::new(ProtocolLimits::default());
    h.connect(c);
    let out = h.accept(None, Some("an-assigned-client-id"));
    (h, out)
}

#[test]
fn connack_bound_by_client_maximum_packet_size_3_1_2_24() {
    for id in ["c", ""] {
        // Its size with an Assigned Client Identifier (empty id) or without.
        let (_, out) = accept_with_max(None, id);
        let n = encoded_len(
            &Packet::ConnAck(connack_of(&out).clone()),
            ProtocolVersion::V5,
        );
        let n = u32::try_from(n).unwrap();
        let (h, out) = accept_with_max(Some(n), id);
        assert_eq!(connack_of(&out).code, ReasonCode::SUCCESS);
        assert!(h.c.is_connected());
        // One byte less: nothing fits without the protocol's own properties, so nothing is
        // sent and the connection closes.
        let (h, out) = accept_with_max(Some(n - 1), id);
        assert_eq!(out.len(), 1, "only Close: {out:?}");
        assert_eq!(close_of(&out).0, Some(ReasonCode::PACKET_TOO_LARGE));
        assert!(h.c.is_closed());
    }
}

#[test]
fn refused_connack_too_large_is_not_sent_3_1_2_24() {
    // The smallest MQTT 5 CONNACK is 5 bytes.
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.maximum_packet_size = Some(4);
    c.properties.authentication_method = Some(bs("SCRAM"));
    let mut h = H::new(ProtocolLimits::default());
    let out = h.connect(c);
    assert!(sent(&out).is_empty(), "{out:?}");
    assert!(has_close(&out));
}

#[test]
fn suback_and_unsuback_too_large_close_without_sending_3_1_2_24() {
    let (_, out) = accept_with_max(None, "c");
    let n = encoded_len(
        &Packet::ConnAck(connack_of(&out).clone()),
        ProtocolVersion::V5,
    );
    let max = u32::try_from(n).unwrap();
    let filters: Vec<String> = (0..2 * n).map(|i| format!("f{i}")).collect();
    let many: Vec<(&str, QoS)> = filters
        .iter()
        .map(|f| (f.as_str(), QoS::AtMostOnce))
        .collect();

    let (mut h, _) = accept_with_max(Some(max), "c");
    // A small SUBACK fits.
    let out = h.handle(subscribe(1, &many[..2]), 1);
    assert_eq!(suback_of(&out).reasons.len(), 2);
    // One reason code per filter: more filters than the limit has bytes.
    let out = h.handle(subscribe(2, &many), 2);
    assert!(sent(&out).is_empty(), "{out:?}");
    assert_eq!(close_of(&out).0, Some(ReasonCode::PACKET_TOO_LARGE));
    let indexed = out
        .iter()
        .filter(|a| matches!(a, Action::Subscribe { .. }))
        .count();
    assert_eq!(
        indexed,
        many.len(),
        "the index stays in step with the session"
    );

    let (mut h, _) = accept_with_max(Some(max), "c");
    let out = h.handle(
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 3,
            filters: filters.iter().map(|f| bs(f)).collect(),
            user_properties: vec![],
        }),
        1,
    );
    assert!(sent(&out).is_empty(), "{out:?}");
    assert_eq!(close_of(&out).0, Some(ReasonCode::PACKET_TOO_LARGE));
}

#[test]
fn reason_string_and_user_properties_dropped_first_3_1_2_25() {
    use super::connection::fit_packet;
    let v = ProtocolVersion::V5;
    let mut d = Disconnect::new(ReasonCode::PROTOCOL_ERROR);
    d.properties.reason_string = Some(bs(&"r".repeat(40)));
    d.properties
        .user_properties
        .push((bs("k"), bs(&"v".repeat(40))));
    let mut p = Packet::Disconnect(d);
    let min = Packet::Disconnect(Disconnect::new(ReasonCode::PROTOCOL_ERROR));
    let min_len = u32::try_from(encoded_len(&min, v)).unwrap();
    assert!(fit_packet(&mut p, v, min_len));
    assert_eq!(
        p,
        Packet::Disconnect(Disconnect::new(ReasonCode::PROTOCOL_ERROR))
    );
    assert!(!fit_packet(&mut p, v, min_len - 1));
    // Kept when it fits with them.
    let mut d = Disconnect::new(ReasonCode::PROTOCOL_ERROR);
    d.properties.reason_string = Some(bs("why"));
    let mut p = Packet::Disconnect(d.clone());
    assert!(fit_packet(&mut p, v, 100));
    assert_eq!(p, Packet::Disconnect(d));
    // CONNACK: the Reason String goes, the Assigned Client Identifier stays.
    let props = ConnAckProperties {
        assigned_client_identifier: Some(bs("id-1")),
        ..Default::default()
    };
    let minimal = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: props.clone(),
    });
    let mut p = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            reason_string: Some(bs(&"r".repeat(40))),
            ..props
        },
    });
    let n = u32::try_from(encoded_len(&minimal, v)).unwrap();
    assert!(fit_packet(&mut p, v, n));
    assert_eq!(p, minimal);
    assert!(!fit_packet(&mut p, v, n - 1));
    // Acks.
    let mut r = PubResp::new(1);
    r.reason = ReasonCode::NOT_AUTHORIZED;
    r.properties.reason_string = Some(bs(&"r".repeat(40)));
    let mut p = Packet::PubAck(r);
    assert!(fit_packet(&mut p, v, 5));
    assert!(matches!(&p, Packet::PubAck(r) if r.reason == ReasonCode::NOT_AUTHORIZED));
}

#[test]
fn packet_size_boundary_is_exact() {
    // Same 15-byte PUBLISH as above: allowed at 15, dropped at 14.
    for (max, expect) in [(15u32, 1usize), (14, 0)] {
        let mut c = connect(ProtocolVersion::V5, "c", true, 10);
        c.properties.maximum_packet_size = Some(max);
        let mut h = connected(ProtocolLimits::default(), c);
        let out = h.deliver(
            &msg("t", QoS::AtLeastOnce),
            &delivery(QoS::AtLeastOnce),
            1,
            true,
        );
        assert_eq!(publishes_sent(&out).len(), expect, "max {max}");
    }
}

#[test]
fn qos0_dropped_when_not_writable() {
    let mut h = v5(10);
    let out = h.deliver(
        &msg("t", QoS::AtMostOnce),
        &delivery(QoS::AtMostOnce),
        1,
        false,
    );
    assert!(out.is_empty());
    assert_eq!(h.c.session().map(|s| s.stats().dropped_qos0), Some(1));
}

#[test]
fn qos1_queued_when_not_writable_and_drained_on_writable() {
    let mut h = v5(10);
    let d = delivery(QoS::AtLeastOnce);
    assert!(h
        .deliver(&msg("a", QoS::AtLeastOnce), &d, 1, false)
        .is_empty());
    assert!(h
        .deliver(&msg("b", QoS::AtLeastOnce), &d, 1, false)
        .is_empty());
    let mut out = Vec::new();
    h.c.on_writable(h.at(2), &mut out);
    let topics: Vec<_> = publishes_sent(&out)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(topics, vec!["a", "b"]);
}

#[test]
fn expired_message_dropped() {
    let mut h = v5(10);
    let mut m = (*msg("t", QoS::AtLeastOnce)).clone();
    m.expires_at = Some(h.at(1_000));
    let m = Message::new(m);
    let out = h.deliver(&m, &delivery(QoS::AtLeastOnce), 1_000, true);
    assert!(out.is_empty());
    assert_eq!(h.c.session().map(|s| s.stats().dropped_expired), Some(1));
}

#[test]
fn message_expiry_counts_down_while_queued() {
    let mut h = v5(10);
    let mut m = (*msg("t", QoS::AtLeastOnce)).clone();
    m.properties.message_expiry_interval = Some(60);
    m.expires_at = Some(h.at(60_000));
    let m = Message::new(m);
    h.deliver(&m, &delivery(QoS::AtLeastOnce), 0, false);
    let mut out = Vec::new();
    h.c.on_writable(h.at(20_000), &mut out);
    assert_eq!(
        publishes_sent(&out)[0].properties.message_expiry_interval,
        Some(40)
    );
}

#[test]
fn message_expired_while_queued_dropped_on_drain() {
    let mut h = v5(10);
    let mut m = (*msg("t", QoS::AtLeastOnce)).clone();
    m.expires_at = Some(h.at(5_000));
    h.deliver(&Message::new(m), &delivery(QoS::AtLeastOnce), 0, false);
    let mut out = Vec::new();
    h.c.on_writable(h.at(6_000), &mut out);
    assert!(out.is_empty());
    assert_eq!(h.c.session().map(|s| s.stats().dropped_expired), Some(1));
}

#[test]
fn retain_flag_follows_retain_as_published() {
    let mut h = v5(10);
    let mut m = (*msg("t", QoS::AtMostOnce)).clone();
    m.retain = true;
    let m = Message::new(m);
    let out = h.deliver(&m, &delivery(QoS::AtMostOnce), 1, true);
    assert!(!publishes_sent(&out)[0].retain);
    let d = Delivery {
        retain_as_published: true,
        ..delivery(QoS::AtMostOnce)
    };
    let out = h.deliver(&m, &d, 1, true);
    assert!(publishes_sent(&out)[0].retain);
}

#[test]
fn subscription_ids_attached_v5_only() {
    let d = Delivery {
        qos: QoS::AtMostOnce,
        retain_as_published: false,
        subscription_ids: vec![4, 9],
    };
    let mut h = v5(10);
    let out = h.deliver(&msg("t", QoS::AtMostOnce), &d, 1, true);
    assert_eq!(
        publishes_sent(&out)[0].properties.subscription_identifiers,
        vec![4, 9]
    );
    let mut h = v3(10);
    let out = h.deliver(&msg("t", QoS::AtMostOnce), &d, 1, true);
    assert!(publishes_sent(&out)[0]
        .properties
        .subscription_identifiers
        .is_empty());
}

#[test]
fn outbound_topic_alias_assigned_then_reused() {
    let limits = ProtocolLimits {
        max_outbound_topic_aliases: 1,
        ..Default::default()
    };
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.topic_alias_maximum = Some(5);
    let mut h = connected(limits, c);
    let d = delivery(QoS::AtMostOnce);
    let out = h.deliver(&msg("long/topic", QoS::AtMostOnce), &d, 1, true);
    let p = publishes_sent(&out)[0];
    assert_eq!(
        (p.topic.as_ref(), p.properties.topic_alias),
        ("long/topic", Some(1))
    );
    let out = h.deliver(&msg("long/topic", QoS::AtMostOnce), &d, 1, true);
    let p = publishes_sent(&out)[0];
    assert_eq!((p.topic.as_ref(), p.properties.topic_alias), ("", Some(1)));
    // Our own cap (1) reached: other topics go without an alias.
    let out = h.deliver(&msg("other", QoS::AtMostOnce), &d, 1, true);
    assert_eq!(publishes_sent(&out)[0].properties.topic_alias, None);
}

#[test]
fn no_outbound_alias_when_client_allows_none() {
    let limits = ProtocolLimits {
        max_outbound_topic_aliases: 10,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.deliver(
        &msg("t", QoS::AtMostOnce),
        &delivery(QoS::AtMostOnce),
        1,
        true,
    );
    assert_eq!(publishes_sent(&out)[0].properties.topic_alias, None);
}

// ----------------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE
// ----------------------------------------------------------------------------------------------

fn suback_of(out: &[Action]) -> &SubAck {
    match out.first() {
        Some(Action::Send(Packet::SubAck(s))) => s,
        other => panic!("SUBACK must come first: {other:?}"),
    }
}

#[test]
fn suback_grants_min_of_requested_and_max_qos() {
    let limits = ProtocolLimits {
        max_qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.handle(
        subscribe(3, &[("a", QoS::ExactlyOnce), ("b", QoS::AtMostOnce)]),
        1,
    );
    let s = suback_of(&out);
    assert_eq!(s.packet_id, 3);
    assert_eq!(
        s.reasons,
        vec![ReasonCode::GRANTED_QOS_1, ReasonCode::GRANTED_QOS_0]
    );
    assert!(matches!(&out[1], Action::Subscribe { filter, options, .. }
        if filter == "a" && options.qos == QoS::AtLeastOnce));
}

#[test]
fn wildcard_subscription_refused_when_unavailable() {
    let limits = ProtocolLimits {
        wildcard_available: false,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.handle(
        subscribe(
            1,
            &[
                ("a/+", QoS::AtMostOnce),
                ("a/#", QoS::AtMostOnce),
                ("a/b", QoS::AtMostOnce),
            ],
        ),
        1,
    );
    assert_eq!(
        suback_of(&out).reasons,
        vec![
            ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
            ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
            ReasonCode::GRANTED_QOS_0
        ]
    );
    assert_eq!(out.len(), 2, "only the accepted filter reaches the index");
}

#[test]
fn shared_subscription_refused_when_unavailable() {
    let limits = ProtocolLimits {
        shared_available: false,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.handle(subscribe(1, &[("$share/g/a", QoS::AtMostOnce)]), 1);
    assert_eq!(
        suback_of(&out).reasons,
        vec![ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED]
    );
}

#[test]
fn subscription_identifier_refused_when_unavailable() {
    let limits = ProtocolLimits {
        sub_ids_available: false,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let mut p = subscribe(1, &[("a", QoS::AtMostOnce)]);
    if let Packet::Subscribe(s) = &mut p {
        s.properties.subscription_identifier = Some(5);
    }
    let out = h.handle(p, 1);
    assert_eq!(
        suback_of(&out).reasons,
        vec![ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED]
    );
}

#[test]
fn invalid_filter_0x8f_v5_and_0x80_v311() {
    let mut h = v5(10);
    let out = h.handle(
        subscribe(1, &[("a/#/b", QoS::AtMostOnce), ("a+", QoS::AtMostOnce)]),
        1,
    );
    assert_eq!(
        suback_of(&out).reasons,
        vec![
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::TOPIC_FILTER_INVALID
        ]
    );
    let mut h = v3(10);
    let out = h.handle(
        subscribe(
            1,
            &[("$share//a", QoS::AtMostOnce), ("ok", QoS::ExactlyOnce)],
        ),
        1,
    );
    assert_eq!(
        suback_of(&out).reasons,
        vec![ReasonCode(0x80), ReasonCode::GRANTED_QOS_2]
    );
}

#[test]
fn subscribe_existed_flag_and_replacement() {
    let mut h = v5(10);
    let out = h.handle(subscribe(1, &[("a", QoS::AtMostOnce)]), 1);
    assert!(matches!(&out[1], Action::Subscribe { existed: false, .. }));
    let out = h.handle(subscribe(2, &[("a", QoS::AtLeastOnce)]), 1);
    assert!(matches!(&out[1], Action::Subscribe { existed: true, .. }));
    let sub = h.c.session().and_then(|s| s.subscription("a").copied());
    assert_eq!(sub.map(|s| s.options.qos), Some(QoS::AtLeastOnce));
    assert_eq!(h.c.session().map(|s| s.subscriptions().count()), Some(1));
}

#[test]
fn subscription_identifier_stored_and_reported() {
    let mut h = v5(10);
    let mut p = subscribe(1, &[("a/+", QoS::AtMostOnce)]);
    if let Packet::Subscribe(s) = &mut p {
        s.properties.subscription_identifier = Some(42);
    }
    let out = h.handle(p, 1);
    assert!(matches!(
        &out[1],
        Action::Subscribe {
            subscription_id: Some(42),
            ..
        }
    ));
    let sub = h.c.session().and_then(|s| s.subscription("a/+").copied());
    assert_eq!(sub.and_then(|s| s.subscription_id), Some(42));
}

#[test]
fn shared_subscription_with_no_local_is_protocol_error() {
    let mut h = v5(10);
    let p = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            bs("$share/g/a"),
            SubscriptionOptions {
                no_local: true,
                ..Default::default()
            },
        )],
        properties: SubscribeProperties::default(),
    });
    let out = h.handle(p, 1);
    assert_eq!(disconnect_sent(&out), Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn subscription_options_passed_to_broker() {
    let mut h = v5(10);
    let opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: 2,
    };
    let p = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(bs("a"), opts)],
        properties: SubscribeProperties::default(),
    });
    let out = h.handle(p, 1);
    assert!(matches!(&out[1], Action::Subscribe { options, .. } if *options == opts));
}

#[test]
fn unsuback_v5_reports_no_subscription_existed() {
    let mut h = v5(10);
    h.handle(subscribe(1, &[("a", QoS::AtMostOnce)]), 1);
    let out = h.handle(
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![bs("a"), bs("b")],
            user_properties: vec![],
        }),
        2,
    );
    match &out[0] {
        Action::Send(Packet::UnsubAck(u)) => {
            assert_eq!(u.packet_id, 2);
            assert_eq!(
                u.reasons,
                vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.len(), 2);
    assert!(matches!(&out[1], Action::Unsubscribe { filter } if filter == "a"));
    assert_eq!(h.c.session().map(|s| s.subscriptions().count()), Some(0));
}

#[test]
fn unsubscribe_invalid_filter_unsuback_0x8f_3_11_3() {
    let mut h = v5(10);
    h.handle(subscribe(1, &[("a", QoS::AtMostOnce)]), 1);
    let out = h.handle(
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![bs("a/#/b"), bs("a"), bs(""), bs("$share/g")],
            user_properties: vec![],
        }),
        2,
    );
    match &out[0] {
        Action::Send(Packet::UnsubAck(u)) => assert_eq!(
            u.reasons,
            vec![
                ReasonCode::TOPIC_FILTER_INVALID,
                ReasonCode::SUCCESS,
                ReasonCode::TOPIC_FILTER_INVALID,
                ReasonCode::TOPIC_FILTER_INVALID
            ]
        ),
        other => panic!("{other:?}"),
    }
    assert!(h.c.is_connected());
}

#[test]
fn invalid_filters_each_get_0x8f_others_granted_4_7_1() {
    // `#x`, `a+`, `a/#/b`, the empty filter and bad `$share` syntax: one reason each, the
    // valid filters of the same SUBSCRIBE unaffected, the connection stays.
    let mut h = v5(10);
    let out = h.handle(
        subscribe(
            1,
            &[
                ("#x", QoS::AtMostOnce),
                ("ok/+", QoS::AtLeastOnce),
                ("", QoS::AtMostOnce),
                ("$share/g", QoS::AtMostOnce),
                ("$share/g+/a", QoS::AtMostOnce),
                ("$share/g/a", QoS::AtMostOnce),
            ],
        ),
        1,
    );
    let bad = ReasonCode::TOPIC_FILTER_INVALID;
    assert_eq!(
        suback_of(&out).reasons,
        vec![bad, ReasonCode(1), bad, bad, bad, ReasonCode(0)]
    );
    assert_eq!(out.len(), 3, "SUBACK and the two valid filters: {out:?}");
    assert!(h.c.is_connected());
}

#[test]
fn shared_syntax_error_0x8f_before_shared_unavailable_0x9e() {
    let limits = ProtocolLimits {
        shared_available: false,
        ..Default::default()
    };
    let mut h = connected(limits, connect(ProtocolVersion::V5, "c", true, 10));
    let out = h.handle(
        subscribe(
            1,
            &[
                ("$share//a", QoS::AtMostOnce),
                ("$share/g/a", QoS::AtMostOnce),
            ],
        ),
        1,
    );
    assert_eq!(
        suback_of(&out).reasons,
        vec![
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
        ]
    );
}

#[test]
fn unsuback_v311_has_no_reasons() {
    let mut h = v3(10);
    let out = h.handle(
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![bs("a")],
            user_properties: vec![],
        }),
        2,
    );
    assert!(matches!(&out[..], [Action::Send(Packet::UnsubAck(u))] if u.reasons.is_empty()));
}

#[test]
fn idle_connection_state_is_small() {
    // Budget: < 1 KiB of broker memory per idle connection (empty maps do not allocate).
    let size = std::mem::size_of::<Connection>() + std::mem::size_of::<Session>();
    eprintln!(
        "Connection {} + Session {} bytes",
        std::mem::size_of::<Connection>(),
        std::mem::size_of::<Session>()
    );
    assert!(size < 1024, "Connection + Session = {size} bytes");
}

#[test]
fn qos0_waits_behind_queued_qos0_when_writable_again() {
    let limits = ProtocolLimits {
        queue_qos0_offline: true,
        ..Default::default()
    };
    let mut s = Session::new(bs("c"), ProtocolVersion::V5);
    s.deliver_offline(
        &msg("first", QoS::AtMostOnce),
        &delivery(QoS::AtMostOnce),
        Instant::now(),
        &limits,
    );
    let mut h = H::new(limits);
    h.connect(connect(ProtocolVersion::V5, "c", false, 10));
    h.accept(Some(s), None);
    // Already drained on accept; a new QoS 0 afterwards comes after it.
    let out = h.deliver(
        &msg("second", QoS::AtMostOnce),
        &delivery(QoS::AtMostOnce),
        1,
        true,
    );
    assert_eq!(publishes_sent(&out)[0].topic, "second");
    assert_eq!(h.c.session().map(|s| s.queued_len()), Some(0));
}

#[test]
fn queued_qos1_sent_before_new_delivery_when_writable_again() {
    let mut h = v5(10);
    let d = delivery(QoS::AtLeastOnce);
    h.deliver(&msg("a", QoS::AtLeastOnce), &d, 1, false);
    let out = h.deliver(&msg("b", QoS::AtLeastOnce), &d, 2, true);
    let topics: Vec<_> = publishes_sent(&out)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(topics, vec!["a", "b"]);
}

// ----------------------------------------------------------------------------------------------
// Robustness: arbitrary packet/event sequences never panic and keep the invariants.
// ----------------------------------------------------------------------------------------------

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Ev {
        Pkt(u8, u16, u16, bool),
        Deliver(u8, bool),
        Writable,
        Timer(u64),
        Bytes(u64),
        Lost,
        Accept,
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            4 => (0u8..14, 0u16..5, 0u16..20, any::<bool>()).prop_map(|(k, id, a, f)| Ev::Pkt(k, id, a, f)),
            2 => (0u8..3, any::<bool>()).prop_map(|(q, w)| Ev::Deliver(q, w)),
            1 => Just(Ev::Writable),
            1 => (0u64..200_000).prop_map(Ev::Timer),
            1 => (0u64..20_000).prop_map(Ev::Bytes),
            1 => Just(Ev::Lost),
            1 => Just(Ev::Accept),
        ]
    }

    fn packet(k: u8, id: u16, alias: u16, flag: bool, v: ProtocolVersion) -> Packet {
        let qos = QoS::from_u8(u8::from(flag) + (id % 2) as u8).unwrap_or_default();
        match k {
            0 => Packet::Connect(Box::new(connect(v, if flag { "" } else { "c" }, flag, id))),
            1 | 2 => {
                let mut p = publish(if alias.is_multiple_of(3) { "" } else { "t/x" }, qos, id);
                if qos == QoS::AtMostOnce {
                    p.packet_id = 0;
                }
                p.retain = flag && alias.is_multiple_of(2);
                if alias > 0 {
                    p.properties.topic_alias = Some(alias);
                }
                Packet::Publish(p)
            }
            3 => Packet::PubAck(ack(id)),
            4 => Packet::PubRec(ack(id)),
            5 => Packet::PubRel(ack(id)),
            6 => Packet::PubComp(ack(id)),
            7 => subscribe(id.max(1), &[("t/+", qos), ("$share/g/t", QoS::AtLeastOnce)]),
            8 => Packet::Unsubscribe(Unsubscribe {
                packet_id: id.max(1),
                filters: vec![bs("t/+")],
                user_properties: vec![],
            }),
            9 => Packet::PingReq,
            10 => {
                let mut d = Disconnect::new(ReasonCode(if flag { 0 } else { 4 }));
                if alias.is_multiple_of(4) {
                    d.properties.session_expiry_interval = Some(u32::from(alias));
                }
                Packet::Disconnect(d)
            }
            11 => Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: AuthProperties::default(),
            }),
            12 => Packet::PingResp,
            _ => Packet::Publish(publish("t/y", QoS::AtLeastOnce, id.max(1))),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_sequences_never_panic(v5: bool, evs in proptest::collection::vec(ev(), 1..60)) {
            let v = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
            let mut c = connect(v, "c", false, 10);
            c.properties.receive_maximum = Some(2);
            c.properties.topic_alias_maximum = Some(2);
            let limits = ProtocolLimits { receive_maximum: 3, max_outbound_topic_aliases: 2,
                max_queued_messages: 5,
                max_inflight_out: 4, ..Default::default() };
            let mut h = H::new(limits);
            let mut t = 0u64;
            let mut closes = 0;
            let mut out = Vec::new();
            h.c.handle(Packet::Connect(Box::new(c)), h.at(0), &mut out);
            for e in evs {
                t += 10;
                let now = h.at(t);
                match e {
                    Ev::Pkt(k, id, a, f) => h.c.handle(packet(k, id, a, f, v), now, &mut out),
                    Ev::Deliver(q, w) => {
                        let q = QoS::from_u8(q).unwrap_or_default();
                        h.c.deliver(&msg("t/x", q), &delivery(q), now, w, &mut out)
                    }
                    Ev::Writable => h.c.on_writable(now, &mut out),
                    Ev::Timer(d) => h.c.on_timer(h.at(t + d), &mut out),
                    Ev::Bytes(d) => { t += d; h.c.on_bytes_received(h.at(t)) }
                    Ev::Lost => h.c.connection_lost(now, &mut out),
                    Ev::Accept => h.c.accept_connect(None, Some(bs("a")), now, &mut out),
                }
                closes += out.iter().filter(|a| matches!(a, Action::Close { .. })).count();
                if let Some(s) = h.c.session() {
                    prop_assert!(s.inflight_len() <= if v5 { 2 } else { 4 }, "inflight window");
                    prop_assert!(s.queued_len() <= 5);
                }
                for a in &out {
                    if let Action::Send(Packet::Publish(p)) = a {
                        prop_assert!(p.qos == QoS::AtMostOnce || p.packet_id != 0);
                    }
                }
                out.clear();
            }
            prop_assert!(closes <= 1, "Close emitted at most once");
        }
    }
}

// ----------------------------------------------------------------------------------------------
// topic ACL (set_acl)
// ----------------------------------------------------------------------------------------------

fn with_acl(mut h: H, rules: &str) -> H {
    h.c.set_acl(Some(crate::auth::ClientAcl {
        acl: Arc::new(crate::auth::Acl::parse(rules).unwrap()),
        username: Some(bs("u")),
        client_id: bs("c1"),
    }));
    h
}

const RULES: &str = "user u\ntopic readwrite ok/#\n";

#[test]
fn acl_denied_publish_v5_acks_0x87_and_is_not_routed() {
    let mut h = with_acl(v5(0), RULES);
    let out = h.handle(Packet::Publish(publish("no/x", QoS::AtLeastOnce, 1)), 1);
    assert!(published(&out).is_empty());
    assert!(
        matches!(sent(&out)[..], [Packet::PubAck(r)] if r.reason == ReasonCode::NOT_AUTHORIZED)
    );
    let out = h.handle(Packet::Publish(publish("no/x", QoS::ExactlyOnce, 2)), 1);
    assert!(published(&out).is_empty());
    assert!(
        matches!(sent(&out)[..], [Packet::PubRec(r)] if r.reason == ReasonCode::NOT_AUTHORIZED)
    );
    let out = h.handle(Packet::Publish(publish("no/x", QoS::AtMostOnce, 0)), 1);
    assert!(out.is_empty(), "{out:?}");
    let out = h.handle(Packet::Publish(publish("ok/x", QoS::AtLeastOnce, 3)), 1);
    assert_eq!(published(&out).len(), 1);
}

#[test]
fn acl_denied_publish_v311_acked_normally_and_not_routed() {
    let mut h = with_acl(v3(0), RULES);
    let out = h.handle(Packet::Publish(publish("no/x", QoS::AtLeastOnce, 1)), 1);
    assert!(published(&out).is_empty());
    assert!(matches!(sent(&out)[..], [Packet::PubAck(r)] if r.reason == ReasonCode::SUCCESS));
    let out = h.handle(Packet::Publish(publish("no/x", QoS::ExactlyOnce, 2)), 1);
    assert!(published(&out).is_empty());
    assert!(matches!(sent(&out)[..], [Packet::PubRec(_)]));
    let out = h.handle(Packet::PubRel(ack(2)), 1);
    assert!(matches!(sent(&out)[..], [Packet::PubComp(r)] if r.reason == ReasonCode::SUCCESS));
}

#[test]
fn acl_denied_subscribe_filters_get_0x87_v5_0x80_v311() {
    for (h, denied) in [
        (v5(0), ReasonCode::NOT_AUTHORIZED),
        (v3(0), ReasonCode(0x80)),
    ] {
        let mut h = with_acl(h, RULES);
        let out = h.handle(
            subscribe(1, &[("ok/#", QoS::AtLeastOnce), ("no/#", QoS::AtLeastOnce)]),
            1,
        );
        match sent(&out)[..] {
            [Packet::SubAck(s)] => assert_eq!(s.reasons, vec![ReasonCode(1), denied]),
            ref other => panic!("{other:?}"),
        }
        let subs: Vec<_> = out
            .iter()
            .filter_map(|a| match a {
                Action::Subscribe { filter, .. } => Some(filter.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(subs, ["ok/#"]);
    }
}

#[test]
fn connect_request_debug_hides_the_password() {
    let mut c = connect(ProtocolVersion::V5, "c1", true, 0);
    c.username = Some(bs("alice"));
    c.password = Some(Bytes::from_static(b"hunter2"));
    let mut h = H::new(ProtocolLimits::default());
    let out = h.connect(c);
    let text = format!("{out:?}");
    assert!(
        text.contains("alice") && text.contains("<redacted>"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// The worker's receive path hands PUBLISH over in place (`handle_publish`): the message
/// routed is the same as through `handle`, and a topic repeated by a publisher is shared with
/// the previous message instead of copied again.
#[test]
fn publish_in_place_routes_the_same_message_and_shares_a_repeated_topic() {
    use crate::protocol::{encode_packet, PublishView};
    for (version, mut h) in [(ProtocolVersion::V311, v3(0)), (ProtocolVersion::V5, v5(0))] {
        let mut routed = Vec::new();
        for topic in ["a/b", "a/b", "c"] {
            let mut p = publish(topic, QoS::AtLeastOnce, 7);
            if version.is_v5() {
                p.properties.message_expiry_interval = Some(30);
                p.properties.user_properties = vec![(bs("k"), bs("v"))];
            }
            let mut wire = bytes::BytesMut::new();
            encode_packet(&Packet::Publish(p.clone()), version, &mut wire);
            let (view, _) = crate::protocol::decode_publish_view(&wire, version, u32::MAX)
                .unwrap()
                .unwrap();
            let mut out = Vec::new();
            let now = h.at(0);
            h.c.handle_publish(view, now, &mut out);
            // Same answer as the owned packet gets.
            let mut h2 = if version.is_v5() { v5(0) } else { v3(0) };
            let out2 = h2.handle(Packet::Publish(p.clone()), 0);
            assert_eq!(sent(&out), sent(&out2), "{version:?} {topic}");
            let m = published(&out)[0].clone();
            let m2 = published(&out2)[0];
            assert_eq!((&m.topic, &m.payload), (&m2.topic, &m2.payload));
            assert_eq!(m.properties, m2.properties, "{version:?}");
            assert_eq!(PublishView::of(&p).to_publish().unwrap(), p);
            routed.push(m);
        }
        let ptr = |m: &Message| m.topic.as_bytes().as_ptr();
        assert_eq!(
            ptr(&routed[0]),
            ptr(&routed[1]),
            "repeated topic copied again"
        );
        assert_ne!(ptr(&routed[1]), ptr(&routed[2]));
        assert!(!routed[0].same(&routed[1]));
    }
}
