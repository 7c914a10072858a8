//! Every packet type in both versions: encode, decode (copying and shared), exact length,
//! streaming (split at every point, byte by byte, several packets per buffer).
mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use ringmq::protocol::*;

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

#[test]
fn samples_cover_every_packet_type() {
    use std::collections::HashSet;
    for v in VERSIONS {
        let types: HashSet<u8> = samples(v).iter().map(|p| p.packet_type() as u8).collect();
        let expected = if v.is_v5() { 15 } else { 14 };
        assert_eq!(types.len(), expected, "{v:?}");
    }
}

#[test]
fn every_sample_round_trips() {
    for v in VERSIONS {
        for p in samples(v) {
            let wire = encode(&p, v);
            assert_eq!(encoded_len(&p, v), wire.len(), "{p:?}");
            let (d, n) = decode_packet(&wire, decode_version(&p, v), u32::MAX)
                .unwrap_or_else(|e| panic!("{v:?} {p:?}: {e}"))
                .expect("complete packet");
            assert_eq!(n, wire.len());
            assert_eq!(d, p, "{v:?}");
            let shared = wire.clone().freeze();
            let (d2, n2) = decode_packet_shared(&shared, decode_version(&p, v), u32::MAX)
                .unwrap()
                .unwrap();
            assert_eq!(n2, wire.len());
            assert_eq!(d2, p);
        }
    }
}

#[test]
fn shared_decode_does_not_copy_the_payload() {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("t/1"),
        packet_id: 9,
        payload: Bytes::from(vec![7u8; 64]),
        properties: PublishProperties::default(),
    });
    let wire = encode(&p, ProtocolVersion::V5).freeze();
    let (d, _) = decode_packet_shared(&wire, Some(ProtocolVersion::V5), u32::MAX)
        .unwrap()
        .unwrap();
    let Packet::Publish(d) = d else {
        panic!("not a publish")
    };
    let range = wire.as_ptr_range();
    assert!(range.contains(&d.payload.as_ptr()));
    assert!(range.contains(&d.topic.as_bytes().as_ptr()));
}

#[test]
fn every_split_point_needs_more_bytes_until_complete() {
    for v in VERSIONS {
        for p in samples(v) {
            let wire = encode(&p, v);
            let dv = decode_version(&p, v);
            for cut in 0..wire.len() {
                assert_eq!(
                    decode_packet(&wire[..cut], dv, u32::MAX),
                    Ok(None),
                    "{v:?} cut {cut} of {p:?}"
                );
            }
        }
    }
}

#[test]
fn byte_by_byte_stream_of_many_packets() {
    for v in VERSIONS {
        // A CONNECT first, then everything else, as a client would stream it.
        let packets: Vec<Packet> = samples(v)
            .into_iter()
            .filter(|p| !matches!(p, Packet::Connect(_)))
            .collect();
        let connect = samples(v).into_iter().next().unwrap();
        let mut stream = encode(&connect, v);
        for p in &packets {
            stream.extend_from_slice(&encode(p, v));
        }

        let mut version = None;
        let mut pending = BytesMut::new();
        let mut decoded = Vec::new();
        for &b in stream.iter() {
            pending.extend_from_slice(&[b]);
            while let Some((p, n)) = decode_packet(&pending, version, u32::MAX).unwrap() {
                let _ = pending.split_to(n);
                if let Packet::Connect(c) = &p {
                    version = Some(c.protocol);
                }
                decoded.push(p);
            }
        }
        assert!(pending.is_empty());
        assert_eq!(decoded[0], connect);
        assert_eq!(&decoded[1..], &packets[..]);
    }
}

#[test]
fn several_packets_in_one_buffer() {
    for v in VERSIONS {
        let packets: Vec<Packet> = samples(v)
            .into_iter()
            .filter(|p| !matches!(p, Packet::Connect(_)))
            .collect();
        let mut buf = BytesMut::new();
        for p in &packets {
            encode_packet(p, v, &mut buf);
        }
        // Copying decoder.
        let mut off = 0;
        let mut out = Vec::new();
        while let Some((p, n)) = decode_packet(&buf[off..], Some(v), u32::MAX).unwrap() {
            off += n;
            out.push(p);
        }
        assert_eq!(off, buf.len());
        assert_eq!(out, packets);
        // Shared decoder.
        let mut bytes = buf.freeze();
        let mut out = Vec::new();
        while let Some((p, n)) = decode_packet_shared(&bytes, Some(v), u32::MAX).unwrap() {
            let _ = bytes.split_to(n);
            out.push(p);
        }
        assert!(bytes.is_empty());
        assert_eq!(out, packets);
    }
}

#[test]
fn v311_encoding_drops_v5_data() {
    let v5 = samples(ProtocolVersion::V5);
    for p in &v5 {
        if matches!(p, Packet::Auth(_)) {
            assert_eq!(encoded_len(p, ProtocolVersion::V311), 0);
            assert_eq!(encode(p, ProtocolVersion::V311).len(), 0);
            continue;
        }
        // Everything must still be decodable as 3.1.1, except what 3.1.1 cannot express: a
        // password without user name, an aliased PUBLISH with an empty topic.
        match p {
            Packet::Connect(c) if c.password.is_some() && c.username.is_none() => continue,
            Packet::Publish(p) if p.topic.is_empty() => continue,
            _ => {}
        }
        let wire = encode(p, ProtocolVersion::V311);
        assert_eq!(wire.len(), encoded_len(p, ProtocolVersion::V311));
        let dv = match p {
            Packet::Connect(_) => None,
            _ => Some(ProtocolVersion::V311),
        };
        let (d, _) = decode_packet(&wire, dv, u32::MAX)
            .unwrap_or_else(|e| panic!("{p:?}: {e}"))
            .unwrap();
        assert_eq!(d.packet_type(), p.packet_type());
    }
}

#[test]
fn wire_bytes_of_known_packets() {
    use ProtocolVersion::*;
    assert_eq!(&encode(&Packet::PingReq, V5)[..], &[0xC0, 0x00]);
    assert_eq!(&encode(&Packet::PingResp, V311)[..], &[0xD0, 0x00]);
    // MQTT 5 PUBACK Success without properties: reason code omitted.
    assert_eq!(
        &encode(&Packet::PubAck(PubResp::new(0x0102)), V5)[..],
        &[0x40, 0x02, 0x01, 0x02]
    );
    assert_eq!(
        &encode(&Packet::PubRel(PubResp::new(5)), V311)[..],
        &[0x62, 0x02, 0x00, 0x05]
    );
    let mut nm = PubResp::new(5);
    nm.reason = ReasonCode::NO_MATCHING_SUBSCRIBERS;
    assert_eq!(
        &encode(&Packet::PubAck(nm.clone()), V5)[..],
        &[0x40, 0x03, 0x00, 0x05, 0x10]
    );
    // 3.1.1 drops the reason code.
    assert_eq!(
        &encode(&Packet::PubAck(nm), V311)[..],
        &[0x40, 0x02, 0x00, 0x05]
    );
    // SUBACK in 3.1.1 maps failures to 0x80.
    let suback = Packet::SubAck(SubAck {
        packet_id: 1,
        reasons: vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::NOT_AUTHORIZED,
            ReasonCode::TOPIC_FILTER_INVALID,
        ],
        properties: AckProperties {
            reason_string: Some(s("x")),
            user_properties: Vec::new(),
        },
    });
    assert_eq!(
        &encode(&suback, V311)[..],
        &[0x90, 0x05, 0x00, 0x01, 0x01, 0x80, 0x80]
    );
    // CONNACK in 3.1.1 maps reason codes to return codes.
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        properties: ConnAckProperties::default(),
    });
    assert_eq!(&encode(&connack, V311)[..], &[0x20, 0x02, 0x00, 0x04]);
    assert_eq!(&encode(&connack, V5)[..], &[0x20, 0x03, 0x00, 0x86, 0x00]);
    // DISCONNECT: empty for normal disconnection; a bare reason carries property length 0
    // (interop: rumqttc 0.24 cannot parse the 1-byte form).
    assert_eq!(
        &encode(&Packet::Disconnect(Disconnect::new(ReasonCode(0))), V5)[..],
        &[0xE0, 0x00]
    );
    assert_eq!(
        &encode(
            &Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
            V5
        )[..],
        &[0xE0, 0x02, 0x8E, 0x00]
    );
    assert_eq!(
        &encode(
            &Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
            V311
        )[..],
        &[0xE0, 0x00]
    );
    // QoS 0 PUBLISH v5: topic, empty property block, payload.
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: s("a/b"),
        packet_id: 0,
        payload: Bytes::from_static(b"hi"),
        properties: PublishProperties::default(),
    });
    assert_eq!(
        &encode(&publish, V5)[..],
        &[0x31, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i']
    );
    assert_eq!(
        &encode(&publish, V311)[..],
        &[0x31, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i']
    );
}

#[test]
fn remaining_length_boundaries() {
    use ProtocolVersion::V311;
    // Payload sizes around the 1/2/3-byte remaining length boundaries.
    for (payload, header) in [
        (0usize, 2usize),
        (122, 2),
        (123, 3),
        (16_378, 3),
        (16_379, 4),
        (2_097_146, 4),
        (2_097_147, 5),
    ] {
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: s("a/b"),
            packet_id: 0,
            payload: Bytes::from(vec![1u8; payload]),
            properties: PublishProperties::default(),
        });
        let wire = encode(&p, V311);
        assert_eq!(wire.len(), header + 5 + payload, "payload {payload}");
        let h = decode_fixed_header(&wire).unwrap().unwrap();
        assert_eq!(h.header_len, header);
        assert_eq!(h.remaining_length as usize, 5 + payload);
        let (d, n) = decode_packet(&wire, Some(V311), u32::MAX).unwrap().unwrap();
        assert_eq!(n, wire.len());
        assert_eq!(d, p);
    }
}

#[test]
fn max_packet_size_is_enforced_from_the_header() {
    use ProtocolVersion::V5;
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("a"),
        packet_id: 0,
        payload: Bytes::from(vec![0u8; 200]),
        properties: PublishProperties::default(),
    });
    let wire = encode(&p, V5);
    let total = wire.len();
    // Exactly the limit is fine.
    assert!(decode_packet(&wire, Some(V5), total as u32)
        .unwrap()
        .is_some());
    // One less: refused as soon as the fixed header is complete (3 bytes here).
    for cut in [3, 10, total] {
        let e = decode_packet(&wire[..cut], Some(V5), total as u32 - 1).unwrap_err();
        assert_eq!(
            e,
            DecodeError::TooLarge {
                size: total,
                max: total as u32 - 1
            }
        );
        assert_eq!(e.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    }
    // Before the fixed header is complete: more bytes needed.
    assert_eq!(decode_packet(&wire[..2], Some(V5), 10), Ok(None));
}

#[test]
fn connect_version_hint_reads_the_level() {
    for v in VERSIONS {
        let p = &samples(v)[0];
        let wire = encode(p, v);
        assert_eq!(connect_version_hint(&wire), Some(v));
    }
    assert_eq!(connect_version_hint(&[0x10, 0x02, 0x00]), None);
    assert_eq!(connect_version_hint(&[0xC0, 0x00]), None);
}

/// Writes the sample packets as a fuzz seed corpus when RINGMQ_WRITE_CORPUS names a directory
/// (used to generate fuzz/corpus/decode; a no-op otherwise).
#[test]
fn write_fuzz_corpus() {
    let Ok(dir) = std::env::var("RINGMQ_WRITE_CORPUS") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let mut i = 0;
    for v in VERSIONS {
        let connect = encode(&samples(v)[0], v);
        for p in samples(v) {
            let mut wire = if matches!(p, Packet::Connect(_)) {
                BytesMut::new()
            } else {
                // Prefix a CONNECT so that the None-version path gets past the first packet.
                connect.clone()
            };
            encode_packet(&p, v, &mut wire);
            let name = format!("{dir}/{:?}-{:02}-{:?}", v, i, p.packet_type());
            std::fs::write(name, &wire[..]).unwrap();
            // And the bare packet too.
            let bare = encode(&p, v);
            let name = format!("{dir}/{:?}-{:02}-{:?}-bare", v, i, p.packet_type());
            std::fs::write(name, &bare[..]).unwrap();
            i += 1;
        }
    }
}

/// MQTT 3.1: protocol name `MQIsdp`, level 3 (MQTT 3.1 section 3.1) decodes as
/// `ProtocolVersion::V31`; packets are encoded as 3.1.1 except CONNECT (name and level) and
/// CONNACK (no Session Present flag: the first byte is reserved, 0).
#[test]
fn mqtt31_connect_decodes_and_connack_has_no_session_present() {
    let v31 = ProtocolVersion::V31;
    let c = Connect {
        protocol: v31,
        clean_start: true,
        keep_alive: 30,
        client_id: "c31".into(),
        will: None,
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: Default::default(),
    };
    let p = Packet::Connect(Box::new(c));
    let wire = encode(&p, v31);
    assert_eq!(&wire[2..11], b"\x00\x06MQIsdp\x03");
    assert_eq!(encoded_len(&p, v31), wire.len());
    assert_eq!(connect_version_hint(&wire), Some(v31));
    let (d, n) = decode_packet(&wire, None, u32::MAX).unwrap().unwrap();
    assert_eq!((d, n), (p, wire.len()));

    let ack = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ReasonCode::SUCCESS,
        properties: Default::default(),
    });
    assert_eq!(&encode(&ack, v31)[..], &[0x20, 0x02, 0x00, 0x00]);
    assert_eq!(
        &encode(&ack, ProtocolVersion::V311)[..],
        &[0x20, 0x02, 0x01, 0x00]
    );

    // 3.1 sets DUP on a retransmitted SUBSCRIBE / UNSUBSCRIBE / PUBREL; 3.1.1 may not.
    let sub = [0x8A, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01];
    assert!(matches!(
        decode_packet(&sub, Some(v31), u32::MAX),
        Ok(Some((Packet::Subscribe(_), 8)))
    ));
    assert!(decode_packet(&sub, Some(ProtocolVersion::V311), u32::MAX).is_err());
}
