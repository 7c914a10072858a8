//! Shared helpers for the codec tests: a set of valid sample packets for both versions.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq::protocol::*;

pub fn s(v: &str) -> ByteString {
    ByteString::from(v)
}

pub fn user(pairs: &[(&str, &str)]) -> UserProperties {
    pairs.iter().map(|(k, v)| (s(k), s(v))).collect()
}

pub fn encode(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    let n = encode_packet(p, v, &mut out);
    assert_eq!(n, out.len());
    out
}

/// Valid packets that round-trip exactly in version `v` (no v5-only data for 3.1.1).
pub fn samples(v: ProtocolVersion) -> Vec<Packet> {
    let v5 = v.is_v5();
    let mut out = Vec::new();
    let ack_props = |reason: &str| {
        if v5 {
            AckProperties {
                reason_string: Some(s(reason)),
                user_properties: user(&[("k", "v"), ("k", "v2")]),
            }
        } else {
            AckProperties::default()
        }
    };

    // CONNECT: minimal, with will, with credentials, with properties.
    out.push(Packet::Connect(Box::new(Connect {
        protocol: v,
        clean_start: true,
        keep_alive: 60,
        client_id: s("client-1"),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    })));
    out.push(Packet::Connect(Box::new(Connect {
        protocol: v,
        clean_start: false,
        keep_alive: 0,
        client_id: s(""),
        will: Some(Will {
            topic: s("last/will"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: if v5 {
                WillProperties {
                    will_delay_interval: Some(30),
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(3600),
                    content_type: Some(s("text/plain")),
                    response_topic: Some(s("resp/topic")),
                    correlation_data: Some(Bytes::from_static(b"\x00\x01")),
                    user_properties: user(&[("a", "b")]),
                }
            } else {
                WillProperties::default()
            },
        }),
        username: Some(s("user")),
        password: Some(Bytes::from_static(b"p\x00ss")),
        properties: if v5 {
            ConnectProperties {
                session_expiry_interval: Some(u32::MAX),
                receive_maximum: Some(100),
                maximum_packet_size: Some(1 << 20),
                topic_alias_maximum: Some(10),
                request_response_information: Some(1),
                request_problem_information: Some(0),
                authentication_method: Some(s("SCRAM-SHA-1")),
                authentication_data: Some(Bytes::from_static(b"\x01\x02\x03")),
                user_properties: user(&[("x", "y"), ("x", "z")]),
            }
        } else {
            ConnectProperties::default()
        },
    })));
    if v5 {
        // MQTT 5 allows a password without a user name.
        out.push(Packet::Connect(Box::new(Connect {
            protocol: v,
            clean_start: true,
            keep_alive: 10,
            client_id: s("ü-client"),
            will: None,
            username: None,
            password: Some(Bytes::from_static(b"secret")),
            properties: ConnectProperties::default(),
        })));
    }

    // CONNACK
    out.push(Packet::ConnAck(ConnAck {
        session_present: true,
        code: ReasonCode::SUCCESS,
        properties: ConnAckProperties::default(),
    }));
    out.push(Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::NOT_AUTHORIZED,
        properties: ConnAckProperties::default(),
    }));
    if v5 {
        out.push(Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::SUCCESS,
            properties: ConnAckProperties {
                session_expiry_interval: Some(10),
                receive_maximum: Some(20),
                maximum_qos: Some(1),
                retain_available: Some(0),
                maximum_packet_size: Some(1000),
                assigned_client_identifier: Some(s("auto-1234")),
                topic_alias_maximum: Some(5),
                reason_string: Some(s("welcome")),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(1),
                shared_subscription_available: Some(0),
                server_keep_alive: Some(30),
                response_information: Some(s("resp/")),
                server_reference: Some(s("other:1883")),
                authentication_method: Some(s("m")),
                authentication_data: Some(Bytes::from_static(b"d")),
                user_properties: user(&[("u", "1")]),
            },
        }));
    } else {
        for code in [0x84u8, 0x85, 0x88, 0x86] {
            out.push(Packet::ConnAck(ConnAck {
                session_present: false,
                code: ReasonCode(code),
                properties: ConnAckProperties::default(),
            }));
        }
    }

    // PUBLISH
    out.push(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("a/b"),
        packet_id: 0,
        payload: Bytes::from_static(b"0123456789abcdef"),
        properties: PublishProperties::default(),
    }));
    out.push(Packet::Publish(Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: s("sensors/ü/temp"),
        packet_id: 7,
        payload: Bytes::from(vec![0xAB; 300]),
        properties: PublishProperties::default(),
    }));
    out.push(Packet::Publish(Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: s("$SYS/x"),
        packet_id: 65535,
        payload: Bytes::new(),
        properties: if v5 {
            PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(99),
                topic_alias: Some(3),
                response_topic: Some(s("reply/here")),
                correlation_data: Some(Bytes::from_static(b"corr")),
                user_properties: user(&[("k", "v")]),
                subscription_identifiers: vec![1, 200, 268_435_455],
                content_type: Some(s("application/json")),
            }
        } else {
            PublishProperties::default()
        },
    }));
    if v5 {
        // Empty topic with a Topic Alias.
        out.push(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s(""),
            packet_id: 1,
            payload: Bytes::from_static(b"aliased"),
            properties: PublishProperties {
                topic_alias: Some(1),
                ..Default::default()
            },
        }));
    }

    // PUBACK / PUBREC / PUBREL / PUBCOMP
    out.push(Packet::PubAck(PubResp::new(1)));
    out.push(Packet::PubRec(PubResp::new(2)));
    out.push(Packet::PubRel(PubResp::new(3)));
    out.push(Packet::PubComp(PubResp::new(65535)));
    if v5 {
        out.push(Packet::PubAck(PubResp {
            packet_id: 4,
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            properties: AckProperties::default(),
        }));
        out.push(Packet::PubRec(PubResp {
            packet_id: 5,
            reason: ReasonCode::QUOTA_EXCEEDED,
            properties: ack_props("full"),
        }));
        out.push(Packet::PubRel(PubResp {
            packet_id: 6,
            reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            properties: AckProperties::default(),
        }));
        out.push(Packet::PubComp(PubResp {
            packet_id: 7,
            reason: ReasonCode::SUCCESS,
            properties: ack_props("done"),
        }));
    }

    // SUBSCRIBE
    let opts = |qos, nl, rap, rh| {
        if v5 {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..Default::default()
            }
        }
    };
    out.push(Packet::Subscribe(Subscribe {
        packet_id: 10,
        filters: vec![
            (s("a/+/c"), opts(QoS::AtMostOnce, false, false, 0)),
            (s("#"), opts(QoS::AtLeastOnce, true, true, 1)),
            (s("$share/g/x/#"), opts(QoS::ExactlyOnce, false, true, 2)),
        ],
        properties: if v5 {
            SubscribeProperties {
                subscription_identifier: Some(12345),
                user_properties: user(&[("s", "t")]),
            }
        } else {
            SubscribeProperties::default()
        },
    }));
    out.push(Packet::SubAck(SubAck {
        packet_id: 10,
        reasons: if v5 {
            vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            ]
        } else {
            vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::UNSPECIFIED_ERROR,
            ]
        },
        properties: ack_props("sub"),
    }));
    out.push(Packet::Unsubscribe(Unsubscribe {
        packet_id: 11,
        filters: vec![s("a/+/c"), s("#")],
        user_properties: if v5 {
            user(&[("why", "done")])
        } else {
            Vec::new()
        },
    }));
    out.push(Packet::UnsubAck(UnsubAck {
        packet_id: 11,
        reasons: if v5 {
            vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
        } else {
            Vec::new()
        },
        properties: ack_props("unsub"),
    }));
    out.push(Packet::PingReq);
    out.push(Packet::PingResp);
    out.push(Packet::Disconnect(Disconnect::new(
        ReasonCode::NORMAL_DISCONNECTION,
    )));
    if v5 {
        out.push(Packet::Disconnect(Disconnect::new(
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        )));
        out.push(Packet::Disconnect(Disconnect {
            reason: ReasonCode::SERVER_MOVED,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some(s("bye")),
                server_reference: Some(s("elsewhere")),
                user_properties: user(&[("a", "b")]),
            },
        }));
        out.push(Packet::Auth(Auth {
            reason: ReasonCode::SUCCESS,
            properties: AuthProperties::default(),
        }));
        out.push(Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: AuthProperties {
                authentication_method: Some(s("SCRAM-SHA-1")),
                authentication_data: Some(Bytes::from_static(b"challenge")),
                reason_string: Some(s("more")),
                user_properties: user(&[("a", "b")]),
            },
        }));
    }
    out
}

/// The version a decoder must be given for `p` in a connection of version `v`.
pub fn decode_version(p: &Packet, v: ProtocolVersion) -> Option<ProtocolVersion> {
    match p {
        Packet::Connect(_) => None,
        _ => Some(v),
    }
}
