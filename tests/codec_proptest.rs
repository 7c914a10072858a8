//! Property tests: for every packet type and both versions, any valid packet encodes to exactly
//! `encoded_len` bytes and decodes back to an equal packet (copying and zero-copy decoders),
//! also when split at an arbitrary point.
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::option;
use proptest::prelude::*;
use ringmq::protocol::*;

type V = ProtocolVersion;

fn text() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9 _ü€/-]{0,12}".prop_map(ByteString::from)
}

fn bin() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn topic() -> impl Strategy<Value = ByteString> {
    "[a-z0-9$]{1,6}(/[a-zA-Z0-9 ü]{0,5}){0,3}".prop_map(ByteString::from)
}

fn filter() -> impl Strategy<Value = ByteString> {
    let level = prop_oneof!["[a-z0-9]{0,4}", Just("+".to_string())];
    (
        prop::collection::vec(level, 1..4),
        any::<bool>(),
        option::of("[a-z0-9]{1,4}"),
    )
        .prop_map(|(levels, hash, share)| {
            let mut f = levels.join("/");
            if f.is_empty() {
                f.push('x');
            }
            if hash {
                f.push_str("/#");
            }
            if let Some(group) = share {
                f = format!("$share/{group}/{f}");
            }
            ByteString::from(f)
        })
}

fn users() -> impl Strategy<Value = UserProperties> {
    prop::collection::vec((text(), text()), 0..3)
}

fn flag() -> impl Strategy<Value = u8> {
    0u8..=1
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn code(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(codes).prop_map(ReasonCode)
}

fn ack_props(v: V) -> BoxedStrategy<AckProperties> {
    if v.is_v5() {
        (option::of(text()), users())
            .prop_map(|(reason_string, user_properties)| AckProperties {
                reason_string,
                user_properties,
            })
            .boxed()
    } else {
        Just(AckProperties::default()).boxed()
    }
}

fn connect(v: V) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let props = if v5 {
        (
            option::of(any::<u32>()),
            option::of(1u16..),
            option::of(1u32..),
            option::of(any::<u16>()),
            option::of(flag()),
            option::of(flag()),
            option::of((text(), option::of(bin()))),
            users(),
        )
            .prop_map(|(se, rm, mps, tam, rri, rpi, auth, up)| ConnectProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                authentication_method: auth.as_ref().map(|a| a.0.clone()),
                authentication_data: auth.and_then(|a| a.1),
                user_properties: up,
            })
            .boxed()
    } else {
        Just(ConnectProperties::default()).boxed()
    };
    let will_props = if v5 {
        (
            option::of(any::<u32>()),
            option::of(flag()),
            option::of(any::<u32>()),
            option::of(text()),
            option::of(topic()),
            option::of(bin()),
            users(),
        )
            .prop_map(|(wd, pfi, mei, ct, rt, cd, up)| WillProperties {
                will_delay_interval: wd,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties: up,
            })
            .boxed()
    } else {
        Just(WillProperties::default()).boxed()
    };
    let will = option::of((topic(), bin(), qos(), any::<bool>(), will_props)).prop_map(|w| {
        w.map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
    });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        will,
        option::of(text()),
        option::of(bin()),
        props,
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 has no password without a user name.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
        .boxed()
}

const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
// The MQTT 5 codes a 3.1.1 return code decodes to.
const CONNACK_V311_CODES: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];

fn connack(v: V) -> BoxedStrategy<Packet> {
    let props = if v.is_v5() {
        (
            (
                option::of(any::<u32>()),
                option::of(1u16..),
                option::of(flag()),
                option::of(flag()),
                option::of(1u32..),
                option::of(text()),
                option::of(any::<u16>()),
                option::of(text()),
            ),
            (
                option::of(flag()),
                option::of(flag()),
                option::of(flag()),
                option::of(any::<u16>()),
                option::of(text()),
                option::of(text()),
                option::of(text()),
                option::of(bin()),
                users(),
            ),
        )
            .prop_map(
                |(
                    (se, rm, mq, ra, mps, aci, tam, rs),
                    (wsa, sia, ssa, ska, ri, sr, am, ad, up),
                )| {
                    ConnAckProperties {
                        session_expiry_interval: se,
                        receive_maximum: rm,
                        maximum_qos: mq,
                        retain_available: ra,
                        maximum_packet_size: mps,
                        assigned_client_identifier: aci,
                        topic_alias_maximum: tam,
                        reason_string: rs,
                        wildcard_subscription_available: wsa,
                        subscription_identifiers_available: sia,
                        shared_subscription_available: ssa,
                        server_keep_alive: ska,
                        response_information: ri,
                        server_reference: sr,
                        authentication_method: am,
                        authentication_data: ad,
                        user_properties: up,
                    }
                },
            )
            .boxed()
    } else {
        Just(ConnAckProperties::default()).boxed()
    };
    let codes = if v.is_v5() {
        CONNACK_CODES
    } else {
        CONNACK_V311_CODES
    };
    (any::<bool>(), code(codes), props)
        .prop_map(|(sp, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && code == ReasonCode::SUCCESS,
                code,
                properties,
            })
        })
        .boxed()
}

fn publish(v: V) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let props = if v5 {
        (
            option::of(flag()),
            option::of(any::<u32>()),
            option::of(1u16..),
            option::of(topic()),
            option::of(bin()),
            users(),
            prop::collection::vec(1u32..=268_435_455, 0..3),
            option::of(text()),
        )
            .prop_map(|(pfi, mei, ta, rt, cd, up, si, ct)| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                user_properties: up,
                subscription_identifiers: si,
                content_type: ct,
            })
            .boxed()
    } else {
        Just(PublishProperties::default()).boxed()
    };
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        1u16..,
        prop::collection::vec(any::<u8>(), 0..300),
        props,
    )
        .prop_map(
            move |(dup, qos, retain, topic, drop_topic, pid, payload, properties)| {
                let at_most_once = qos == QoS::AtMostOnce;
                // MQTT 5 may leave the topic empty when a Topic Alias is present.
                let topic = if v5 && drop_topic && properties.topic_alias.is_some() {
                    ByteString::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_most_once { 0 } else { pid },
                    payload: Bytes::from(payload),
                    properties,
                })
            },
        )
        .boxed()
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];

fn pub_resp(v: V, codes: &'static [u8]) -> BoxedStrategy<PubResp> {
    let reason = if v.is_v5() {
        code(codes).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (1u16.., reason, ack_props(v))
        .prop_map(|(packet_id, reason, properties)| PubResp {
            packet_id,
            reason,
            properties,
        })
        .boxed()
}

fn subscribe(v: V) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let opts = (qos(), any::<bool>(), any::<bool>(), 0u8..=2);
    let props = if v5 {
        (option::of(1u32..=268_435_455), users())
            .prop_map(
                |(subscription_identifier, user_properties)| SubscribeProperties {
                    subscription_identifier,
                    user_properties,
                },
            )
            .boxed()
    } else {
        Just(SubscribeProperties::default()).boxed()
    };
    (1u16.., prop::collection::vec((filter(), opts), 1..5), props)
        .prop_map(move |(packet_id, filters, properties)| {
            let filters = filters
                .into_iter()
                .map(|(f, (qos, nl, rap, rh))| {
                    let shared = f.starts_with("$share/");
                    let o = if v5 {
                        SubscriptionOptions {
                            qos,
                            no_local: nl && !shared,
                            retain_as_published: rap,
                            retain_handling: rh,
                        }
                    } else {
                        SubscriptionOptions {
                            qos,
                            ..Default::default()
                        }
                    };
                    (f, o)
                })
                .collect();
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
        .boxed()
}

const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn suback(v: V) -> BoxedStrategy<Packet> {
    let codes = if v.is_v5() {
        SUBACK_CODES
    } else {
        &[0x00, 0x01, 0x02, 0x80]
    };
    (
        1u16..,
        prop::collection::vec(code(codes), 1..6),
        ack_props(v),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        })
        .boxed()
}

fn unsubscribe(v: V) -> BoxedStrategy<Packet> {
    let up = if v.is_v5() {
        users().boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (1u16.., prop::collection::vec(filter(), 1..5), up)
        .prop_map(|(packet_id, filters, user_properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                user_properties,
            })
        })
        .boxed()
}

fn unsuback(v: V) -> BoxedStrategy<Packet> {
    if v.is_v5() {
        (
            1u16..,
            prop::collection::vec(code(UNSUBACK_CODES), 1..6),
            ack_props(v),
        )
            .prop_map(|(packet_id, reasons, properties)| {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reasons,
                    properties,
                })
            })
            .boxed()
    } else {
        (1u16..)
            .prop_map(|packet_id| {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reasons: Vec::new(),
                    properties: AckProperties::default(),
                })
            })
            .boxed()
    }
}

fn disconnect(v: V) -> BoxedStrategy<Packet> {
    if v.is_v5() {
        (
            code(DISCONNECT_CODES),
            option::of(any::<u32>()),
            option::of(text()),
            option::of(text()),
            users(),
        )
            .prop_map(|(reason, se, rs, sr, up)| {
                Packet::Disconnect(Disconnect {
                    reason,
                    properties: DisconnectProperties {
                        session_expiry_interval: se,
                        reason_string: rs,
                        server_reference: sr,
                        user_properties: up,
                    },
                })
            })
            .boxed()
    } else {
        Just(Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .boxed()
    }
}

fn auth() -> BoxedStrategy<Packet> {
    (
        code(&[0x00, 0x18, 0x19]),
        option::of(text()),
        option::of(bin()),
        option::of(text()),
        users(),
    )
        .prop_map(|(reason, am, ad, rs, up)| {
            Packet::Auth(Auth {
                reason,
                properties: AuthProperties {
                    authentication_method: am,
                    authentication_data: ad,
                    reason_string: rs,
                    user_properties: up,
                },
            })
        })
        .boxed()
}

fn any_packet(v: V) -> BoxedStrategy<Packet> {
    let mut all = vec![
        connect(v),
        connack(v),
        publish(v),
        pub_resp(v, PUBACK_CODES).prop_map(Packet::PubAck).boxed(),
        pub_resp(v, PUBACK_CODES).prop_map(Packet::PubRec).boxed(),
        pub_resp(v, PUBREL_CODES).prop_map(Packet::PubRel).boxed(),
        pub_resp(v, PUBREL_CODES).prop_map(Packet::PubComp).boxed(),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v),
    ];
    if v.is_v5() {
        all.push(auth());
    }
    prop::strategy::Union::new(all).boxed()
}

fn round_trip(p: &Packet, v: V, split: usize) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    let n = encode_packet(p, v, &mut out);
    prop_assert_eq!(n, out.len());
    prop_assert_eq!(encoded_len(p, v), n);
    let dv = match p {
        Packet::Connect(_) => None,
        _ => Some(v),
    };
    let (d, used) = decode_packet(&out, dv, u32::MAX)
        .map_err(|e| TestCaseError::fail(format!("{e} for {p:?}")))?
        .ok_or_else(|| TestCaseError::fail("incomplete"))?;
    prop_assert_eq!(used, n);
    prop_assert_eq!(&d, p);
    let shared = out.clone().freeze();
    let (d2, used2) = decode_packet_shared(&shared, dv, u32::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .ok_or_else(|| TestCaseError::fail("incomplete"))?;
    prop_assert_eq!(used2, n);
    prop_assert_eq!(&d2, p);
    // The in-place PUBLISH decoder (the broker's receive path) reads the same packet.
    if let (Packet::Publish(orig), Some(v)) = (p, dv) {
        let (view, used3) = decode_publish_view(&out, v, u32::MAX)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .ok_or_else(|| TestCaseError::fail("incomplete"))?;
        prop_assert_eq!(used3, n);
        prop_assert_eq!(
            &view
                .to_publish()
                .map_err(|e| TestCaseError::fail(e.to_string()))?,
            orig
        );
        prop_assert_eq!(
            view.has_other_properties(),
            PublishView::of(orig).has_other_properties()
        );
        let cut = split % n;
        prop_assert_eq!(decode_publish_view(&out[..cut], v, u32::MAX), Ok(None));
    }
    // Any strict prefix needs more bytes.
    let cut = split % n;
    prop_assert_eq!(decode_packet(&out[..cut], dv, u32::MAX), Ok(None));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_v311(p in any_packet(V::V311), split in any::<usize>()) {
        round_trip(&p, V::V311, split)?;
    }

    #[test]
    fn round_trip_v5(p in any_packet(V::V5), split in any::<usize>()) {
        round_trip(&p, V::V5, split)?;
    }

    /// Encoding for 3.1.1 anything valid in MQTT 5 gives a 3.1.1 packet of the same type
    /// (except AUTH, which has no 3.1.1 form, and what 3.1.1 cannot express).
    #[test]
    fn v5_packets_encode_as_valid_v311(p in any_packet(V::V5)) {
        let skip = match &p {
            Packet::Auth(_) => true,
            Packet::Connect(c) => c.password.is_some() && c.username.is_none(),
            Packet::Publish(p) => p.topic.is_empty(),
            _ => false,
        };
        if !skip {
            let mut out = BytesMut::new();
            let n = encode_packet(&p, V::V311, &mut out);
            prop_assert_eq!(encoded_len(&p, V::V311), n);
            let dv = match &p { Packet::Connect(_) => None, _ => Some(V::V311) };
            let (d, used) = decode_packet(&out, dv, u32::MAX)
                .map_err(|e| TestCaseError::fail(format!("{e} for {p:?}")))?
                .ok_or_else(|| TestCaseError::fail("incomplete"))?;
            prop_assert_eq!(used, n);
            prop_assert_eq!(d.packet_type(), p.packet_type());
        }
    }

    /// Arbitrary bytes never panic, and a decoded packet never claims more than the buffer.
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..64), which in 0u8..3) {
        let v = match which { 0 => None, 1 => Some(V::V311), _ => Some(V::V5) };
        let res = decode_packet(&data, v, u32::MAX);
        if let Ok(Some((_, n))) = res {
            prop_assert!(n <= data.len());
        }
        // On a PUBLISH the in-place decoder gives the same answer.
        if let (Some(v), Some(b)) = (v, data.first()) {
            if b >> 4 == 3 {
                let view = decode_publish_view(&data, v, u32::MAX)
                    .map(|r| r.map(|(p, n)| (Packet::Publish(p.to_publish().unwrap()), n)));
                prop_assert_eq!(view, res);
            }
        }
    }
}
