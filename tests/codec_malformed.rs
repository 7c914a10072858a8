//! Malformed and protocol-violating packets: each must be refused with its specific reason code,
//! by the copying and by the zero-copy decoder alike.
use bytes::Bytes;
use ringmq::protocol::*;

const M: ReasonCode = ReasonCode::MALFORMED_PACKET;
const P: ReasonCode = ReasonCode::PROTOCOL_ERROR;
const TN: ReasonCode = ReasonCode::TOPIC_NAME_INVALID;
const UV: ReasonCode = ReasonCode::UNSUPPORTED_PROTOCOL_VERSION;
const TA: ReasonCode = ReasonCode::TOPIC_ALIAS_INVALID;

const N: Option<ProtocolVersion> = None;
const V3: Option<ProtocolVersion> = Some(ProtocolVersion::V311);
const V5: Option<ProtocolVersion> = Some(ProtocolVersion::V5);

fn vbi(mut v: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v % 128) as u8;
        v /= 128;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Fixed header (first byte + correct remaining length) + body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(vbi(body.len()));
    out.extend_from_slice(body);
    out
}

/// Two-byte length prefixed data.
fn st(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// A property block: length + content.
fn props(p: &[u8]) -> Vec<u8> {
    let mut out = vbi(p.len());
    out.extend_from_slice(p);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// CONNECT with protocol name, level, flags, keep alive 60, optional v5 property block, payload.
fn connect(
    name: &[u8],
    level: u8,
    flags: u8,
    prop_block: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = st(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&[0, 60]);
    if let Some(p) = prop_block {
        body.extend_from_slice(p);
    }
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

/// MQTT 5 CONNECT with the given CONNECT properties and client id "c".
fn connect5(p: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 5, 0x02, Some(&props(p)), &st(b"c"))
}

/// MQTT 5 CONNECT with a will carrying the given will properties.
fn connect5_will(wp: &[u8]) -> Vec<u8> {
    let payload = cat(&[&st(b"c"), &props(wp), &st(b"w/t"), &st(b"bye")]);
    connect(b"MQTT", 5, 0x06, Some(&props(&[])), &payload)
}

/// MQTT 5 QoS 0 PUBLISH to "t" with the given properties and payload "x".
fn publish5(p: &[u8]) -> Vec<u8> {
    frame(0x30, &cat(&[&st(b"t"), &props(p), b"x"]))
}

/// SUBSCRIBE (packet id 1) with a property block (v5 when Some) and raw payload.
fn subscribe(prop_block: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1];
    if let Some(p) = prop_block {
        body.extend_from_slice(p);
    }
    body.extend_from_slice(payload);
    frame(0x82, &body)
}

fn cases() -> Vec<(&'static str, Option<ProtocolVersion>, Vec<u8>, ReasonCode)> {
    let empty = props(&[]);
    vec![
        // ---------------------------------------------------------------- fixed header
        ("packet type 0 (v5)", V5, vec![0x00, 0x00], M),
        ("packet type 0 (3.1.1)", V3, vec![0x00, 0x00], M),
        ("AUTH does not exist in 3.1.1", V3, vec![0xF0, 0x00], M),
        ("PUBREL flags 0000", V5, vec![0x60, 0x02, 0x00, 0x01], M),
        ("PUBREL flags 0011", V3, vec![0x63, 0x02, 0x00, 0x01], M),
        (
            "SUBSCRIBE flags 0000",
            V3,
            frame(0x80, &cat(&[&[0, 1], &st(b"a"), &[0]])),
            M,
        ),
        (
            "SUBSCRIBE flags 1010",
            V5,
            frame(0x8A, &cat(&[&[0, 1, 0], &st(b"a"), &[0]])),
            M,
        ),
        (
            "UNSUBSCRIBE flags 0000",
            V3,
            frame(0xA0, &cat(&[&[0, 1], &st(b"a")])),
            M,
        ),
        ("PUBACK flags 0001", V3, vec![0x41, 0x02, 0x00, 0x01], M),
        ("PUBREC flags 0010", V5, vec![0x52, 0x02, 0x00, 0x01], M),
        ("PUBCOMP flags 1000", V5, vec![0x78, 0x02, 0x00, 0x01], M),
        ("PINGREQ flags 0001", V5, vec![0xC1, 0x00], M),
        ("PINGRESP flags 0100", V3, vec![0xD4, 0x00], M),
        (
            "CONNACK flags 1000",
            V5,
            vec![0x28, 0x03, 0x00, 0x00, 0x00],
            M,
        ),
        ("DISCONNECT flags 0010", V5, vec![0xE2, 0x00], M),
        ("AUTH flags 0001", V5, vec![0xF1, 0x00], M),
        (
            "SUBACK flags 0010",
            V3,
            vec![0x92, 0x03, 0x00, 0x01, 0x00],
            M,
        ),
        ("UNSUBACK flags 0001", V3, vec![0xB1, 0x02, 0x00, 0x01], M),
        (
            "CONNECT flags 0001",
            N,
            cat(&[&[0x11], &connect(b"MQTT", 4, 0x02, None, &st(b"c"))[1..]]),
            M,
        ),
        (
            "PUBLISH QoS 3",
            V5,
            frame(0x36, &cat(&[&st(b"t"), &[0, 1], &empty])),
            M,
        ),
        ("PUBLISH QoS 3 (header only)", V3, vec![0x36], M),
        ("PUBLISH QoS 0 with DUP", V3, frame(0x38, &st(b"t")), M),
        (
            "remaining length of 5 bytes",
            V5,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            M,
        ),
        (
            "remaining length of 5 bytes (PINGREQ)",
            V3,
            vec![0xC0, 0x80, 0x80, 0x80, 0x80, 0x00],
            M,
        ),
        ("PINGREQ with a body", V5, vec![0xC0, 0x01, 0x00], M),
        ("PINGRESP with a body", V3, vec![0xD0, 0x01, 0x00], M),
        ("first packet is PINGREQ", N, vec![0xC0, 0x00], P),
        ("first packet is PUBLISH", N, frame(0x30, &st(b"t")), P),
        (
            "first packet is CONNACK",
            N,
            vec![0x20, 0x02, 0x00, 0x00],
            P,
        ),
        ("first packet is AUTH", N, vec![0xF0, 0x00], P),
        ("first packet is type 0", N, vec![0x00, 0x00], P),
        // ---------------------------------------------------------------- CONNECT
        (
            "MQIsdp level 4",
            N,
            connect(b"MQIsdp", 4, 0x02, None, &st(b"c")),
            UV,
        ),
        (
            "MQTT level 3",
            N,
            connect(b"MQTT", 3, 0x02, None, &st(b"c")),
            UV,
        ),
        (
            "MQTT level 6",
            N,
            connect(b"MQTT", 6, 0x02, None, &st(b"c")),
            UV,
        ),
        (
            "MQTT level 0",
            N,
            connect(b"MQTT", 0, 0x02, None, &st(b"c")),
            UV,
        ),
        (
            "unknown protocol name",
            N,
            connect(b"HTTP", 4, 0x02, None, &st(b"c")),
            P,
        ),
        (
            "lower-case protocol name",
            N,
            connect(b"mqtt", 4, 0x02, None, &st(b"c")),
            P,
        ),
        (
            "CONNECT reserved flag (3.1.1)",
            N,
            connect(b"MQTT", 4, 0x03, None, &st(b"c")),
            M,
        ),
        (
            "CONNECT reserved flag (v5)",
            N,
            connect(b"MQTT", 5, 0x01, Some(&empty), &st(b"c")),
            M,
        ),
        (
            "will QoS without will flag",
            N,
            connect(b"MQTT", 4, 0x08, None, &st(b"c")),
            M,
        ),
        (
            "will QoS 2 without will flag (v5)",
            N,
            connect(b"MQTT", 5, 0x10, Some(&empty), &st(b"c")),
            M,
        ),
        (
            "will retain without will flag",
            N,
            connect(b"MQTT", 4, 0x20, None, &st(b"c")),
            M,
        ),
        (
            "will QoS 3",
            N,
            connect(
                b"MQTT",
                4,
                0x1C,
                None,
                &cat(&[&st(b"c"), &st(b"w"), &st(b"p")]),
            ),
            M,
        ),
        (
            "password without user name (3.1.1)",
            N,
            connect(b"MQTT", 4, 0x40, None, &cat(&[&st(b"c"), &st(b"pw")])),
            M,
        ),
        (
            "client id runs past the packet",
            N,
            connect(b"MQTT", 4, 0x02, None, &[0, 9, b'a']),
            M,
        ),
        (
            "trailing byte after CONNECT payload",
            N,
            connect(b"MQTT", 4, 0x02, None, &cat(&[&st(b"c"), &[0]])),
            M,
        ),
        (
            "client id invalid UTF-8",
            N,
            connect(b"MQTT", 4, 0x02, None, &st(&[0xFF])),
            M,
        ),
        (
            "client id with U+0000",
            N,
            connect(b"MQTT", 4, 0x02, None, &st(b"a\0b")),
            M,
        ),
        (
            "client id with a surrogate",
            N,
            connect(b"MQTT", 5, 0x02, Some(&empty), &st(&[0xED, 0xA0, 0x80])),
            M,
        ),
        (
            "client id overlong NUL",
            N,
            connect(b"MQTT", 4, 0x02, None, &st(&[0xC0, 0x80])),
            M,
        ),
        (
            "client id truncated UTF-8 sequence",
            N,
            connect(b"MQTT", 4, 0x02, None, &st(&[b'a', 0xE2, 0x82])),
            M,
        ),
        (
            "protocol name invalid length",
            N,
            frame(0x10, &[0, 200, b'M']),
            M,
        ),
        (
            "keep alive missing",
            N,
            frame(0x10, &cat(&[&st(b"MQTT"), &[4, 2]])),
            M,
        ),
        ("empty CONNECT body", N, vec![0x10, 0x00], M),
        (
            "user name flag without user name",
            N,
            connect(b"MQTT", 4, 0x82, None, &st(b"c")),
            M,
        ),
        (
            "password flag without password",
            N,
            connect(b"MQTT", 4, 0xC2, None, &cat(&[&st(b"c"), &st(b"u")])),
            M,
        ),
        (
            "user name with U+0000",
            N,
            connect(b"MQTT", 4, 0x82, None, &cat(&[&st(b"c"), &st(b"u\0")])),
            M,
        ),
        (
            "will flag without will topic",
            N,
            connect(b"MQTT", 4, 0x06, None, &st(b"c")),
            M,
        ),
        (
            "will topic with wildcard",
            N,
            connect(
                b"MQTT",
                4,
                0x06,
                None,
                &cat(&[&st(b"c"), &st(b"a/+"), &st(b"p")]),
            ),
            TN,
        ),
        (
            "will topic with # (v5)",
            N,
            connect(
                b"MQTT",
                5,
                0x06,
                Some(&empty),
                &cat(&[&st(b"c"), &empty, &st(b"w/#"), &st(b"bye")]),
            ),
            TN,
        ),
        (
            "empty will topic",
            N,
            connect(
                b"MQTT",
                4,
                0x06,
                None,
                &cat(&[&st(b"c"), &st(b""), &st(b"p")]),
            ),
            TN,
        ),
        (
            "v5 CONNECT without property length",
            N,
            connect(b"MQTT", 5, 0x02, None, &[]),
            M,
        ),
        ("unknown property 0x05", N, connect5(&[0x05, 0x00]), M),
        ("unknown property 0x7F", N, connect5(&[0x7F, 0x00]), M),
        (
            "property id as a 2-byte VBI",
            N,
            connect5(&[0x91, 0x00, 0, 0, 0, 1]),
            M,
        ),
        (
            "Topic Alias is not a CONNECT property",
            N,
            connect5(&[0x23, 0x00, 0x01]),
            M,
        ),
        (
            "Reason String is not a CONNECT property",
            N,
            connect5(&cat(&[&[0x1F], &st(b"r")])),
            M,
        ),
        ("Receive Maximum 0", N, connect5(&[0x21, 0x00, 0x00]), P),
        ("Maximum Packet Size 0", N, connect5(&[0x27, 0, 0, 0, 0]), P),
        ("Request Problem Information 2", N, connect5(&[0x17, 2]), P),
        (
            "Request Response Information 2",
            N,
            connect5(&[0x19, 0xFF]),
            P,
        ),
        (
            "duplicate Session Expiry Interval",
            N,
            connect5(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]),
            P,
        ),
        (
            "duplicate Receive Maximum",
            N,
            connect5(&[0x21, 0, 1, 0x21, 0, 1]),
            P,
        ),
        (
            "duplicate Authentication Method",
            N,
            connect5(&cat(&[&[0x15], &st(b"m"), &[0x15], &st(b"m")])),
            P,
        ),
        (
            "Authentication Data without Method",
            N,
            connect5(&cat(&[&[0x16], &st(b"d")])),
            P,
        ),
        (
            "property length beyond the packet",
            N,
            connect(b"MQTT", 5, 0x02, Some(&[0x20, 0x11, 0, 0, 0, 1]), &st(b"c")),
            M,
        ),
        (
            "property value beyond the property block",
            N,
            connect(
                b"MQTT",
                5,
                0x02,
                Some(&[0x03, 0x11, 0, 0]),
                &cat(&[&[0, 1], &st(b"c")]),
            ),
            M,
        ),
        (
            "user property key invalid UTF-8",
            N,
            connect5(&cat(&[&[0x26], &st(&[0xFE]), &st(b"v")])),
            M,
        ),
        (
            "user property value with U+0000",
            N,
            connect5(&cat(&[&[0x26], &st(b"k"), &st(b"\0")])),
            M,
        ),
        (
            "user property without value",
            N,
            connect5(&cat(&[&[0x26], &st(b"k")])),
            M,
        ),
        (
            "Authentication Method invalid UTF-8",
            N,
            connect5(&cat(&[&[0x15], &st(&[0x80])])),
            M,
        ),
        (
            "will Payload Format Indicator 2",
            N,
            connect5_will(&[0x01, 2]),
            P,
        ),
        (
            "will property Session Expiry not allowed",
            N,
            connect5_will(&[0x11, 0, 0, 0, 1]),
            M,
        ),
        (
            "will property Topic Alias not allowed",
            N,
            connect5_will(&[0x23, 0, 1]),
            M,
        ),
        (
            "will Response Topic with wildcard",
            N,
            connect5_will(&cat(&[&[0x08], &st(b"a/#")])),
            P,
        ),
        (
            "will Response Topic empty",
            N,
            connect5_will(&cat(&[&[0x08], &st(b"")])),
            P,
        ),
        (
            "duplicate Will Delay Interval",
            N,
            connect5_will(&[0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 1]),
            P,
        ),
        (
            "duplicate will Content Type",
            N,
            connect5_will(&cat(&[&[0x03], &st(b"a"), &[0x03], &st(b"b")])),
            P,
        ),
        // ---------------------------------------------------------------- CONNACK
        (
            "CONNACK reserved ack flags",
            V3,
            vec![0x20, 0x02, 0x02, 0x00],
            M,
        ),
        (
            "CONNACK return code 6 (3.1.1)",
            V3,
            vec![0x20, 0x02, 0x00, 0x06],
            M,
        ),
        (
            "CONNACK session present with failure (3.1.1)",
            V3,
            vec![0x20, 0x02, 0x01, 0x05],
            P,
        ),
        (
            "CONNACK session present with failure (v5)",
            V5,
            vec![0x20, 0x03, 0x01, 0x87, 0x00],
            P,
        ),
        (
            "CONNACK trailing byte (3.1.1)",
            V3,
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            M,
        ),
        (
            "CONNACK reason 0x01 (v5)",
            V5,
            vec![0x20, 0x03, 0x00, 0x01, 0x00],
            M,
        ),
        (
            "CONNACK reason 0x8E (v5)",
            V5,
            vec![0x20, 0x03, 0x00, 0x8E, 0x00],
            M,
        ),
        (
            "CONNACK without property length (v5)",
            V5,
            vec![0x20, 0x02, 0x00, 0x00],
            M,
        ),
        (
            "CONNACK Maximum QoS 2",
            V5,
            frame(0x20, &cat(&[&[0, 0], &props(&[0x24, 2])])),
            P,
        ),
        (
            "CONNACK Retain Available 2",
            V5,
            frame(0x20, &cat(&[&[0, 0], &props(&[0x25, 2])])),
            P,
        ),
        (
            "CONNACK Shared Subscription Available 3",
            V5,
            frame(0x20, &cat(&[&[0, 0], &props(&[0x2A, 3])])),
            P,
        ),
        (
            "CONNACK Receive Maximum 0",
            V5,
            frame(0x20, &cat(&[&[0, 0], &props(&[0x21, 0, 0])])),
            P,
        ),
        (
            "CONNACK Request Problem Information not allowed",
            V5,
            frame(0x20, &cat(&[&[0, 0], &props(&[0x17, 1])])),
            M,
        ),
        ("CONNACK too short", V3, vec![0x20, 0x01, 0x00], M),
        // ---------------------------------------------------------------- PUBLISH
        (
            "topic with + (3.1.1)",
            V3,
            frame(0x30, &cat(&[&st(b"a/+"), b"x"])),
            TN,
        ),
        (
            "topic with # (v5)",
            V5,
            frame(0x30, &cat(&[&st(b"a/#"), &empty, b"x"])),
            TN,
        ),
        (
            "topic that is only +",
            V3,
            frame(0x32, &cat(&[&st(b"+"), &[0, 1]])),
            TN,
        ),
        (
            "empty topic (3.1.1)",
            V3,
            frame(0x30, &cat(&[&st(b""), b"x"])),
            TN,
        ),
        (
            "empty topic without Topic Alias (v5)",
            V5,
            frame(0x30, &cat(&[&st(b""), &empty, b"x"])),
            P,
        ),
        ("Topic Alias 0", V5, publish5(&[0x23, 0, 0]), TA),
        (
            "QoS 1 packet id 0 (3.1.1)",
            V3,
            frame(0x32, &cat(&[&st(b"t"), &[0, 0], b"x"])),
            P,
        ),
        (
            "QoS 2 packet id 0 (v5)",
            V5,
            frame(0x34, &cat(&[&st(b"t"), &[0, 0], &empty])),
            P,
        ),
        (
            "QoS 1 without room for a packet id",
            V3,
            frame(0x32, &cat(&[&st(b"t"), &[0]])),
            M,
        ),
        (
            "topic length beyond the packet",
            V3,
            frame(0x30, &[0, 5, b'a']),
            M,
        ),
        ("only one byte of topic length", V3, frame(0x30, &[0]), M),
        (
            "topic invalid UTF-8",
            V3,
            frame(0x30, &cat(&[&st(&[b'a', 0xFF]), b"x"])),
            M,
        ),
        (
            "topic with U+0000",
            V5,
            frame(0x30, &cat(&[&st(b"a\0"), &empty])),
            M,
        ),
        (
            "v5 PUBLISH without property length",
            V5,
            frame(0x30, &st(b"t")),
            M,
        ),
        ("Payload Format Indicator 2", V5, publish5(&[0x01, 2]), P),
        ("Subscription Identifier 0", V5, publish5(&[0x0B, 0]), P),
        (
            "Subscription Identifier of 5 bytes",
            V5,
            publish5(&[0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]),
            M,
        ),
        (
            "duplicate Topic Alias",
            V5,
            publish5(&[0x23, 0, 1, 0x23, 0, 2]),
            P,
        ),
        (
            "duplicate Message Expiry Interval",
            V5,
            publish5(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1]),
            P,
        ),
        (
            "duplicate Payload Format Indicator",
            V5,
            publish5(&[0x01, 0, 0x01, 1]),
            P,
        ),
        (
            "duplicate Correlation Data",
            V5,
            publish5(&cat(&[&[0x09], &st(b"a"), &[0x09], &st(b"b")])),
            P,
        ),
        (
            "Session Expiry is not a PUBLISH property",
            V5,
            publish5(&[0x11, 0, 0, 0, 1]),
            M,
        ),
        (
            "Receive Maximum is not a PUBLISH property",
            V5,
            publish5(&[0x21, 0, 1]),
            M,
        ),
        (
            "Response Topic with wildcard",
            V5,
            publish5(&cat(&[&[0x08], &st(b"r/+")])),
            P,
        ),
        (
            "Content Type invalid UTF-8",
            V5,
            publish5(&cat(&[&[0x03], &st(&[0xC3])])),
            M,
        ),
        (
            "Correlation Data beyond the block",
            V5,
            publish5(&[0x09, 0, 10, 1]),
            M,
        ),
        (
            "PUBLISH property length beyond packet",
            V5,
            frame(0x30, &cat(&[&st(b"t"), &[0x10, 0x01, 0x01]])),
            M,
        ),
        (
            "PUBLISH property length 5-byte VBI",
            V5,
            frame(0x30, &cat(&[&st(b"t"), &[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]])),
            M,
        ),
        // ---------------------------------------------------------------- PUBACK & co
        ("PUBACK packet id 0", V3, vec![0x40, 0x02, 0x00, 0x00], P),
        (
            "PUBREC packet id 0 (v5)",
            V5,
            vec![0x50, 0x02, 0x00, 0x00],
            P,
        ),
        ("PUBREL packet id 0", V3, vec![0x62, 0x02, 0x00, 0x00], P),
        (
            "PUBCOMP packet id 0",
            V5,
            vec![0x70, 0x03, 0x00, 0x00, 0x00],
            P,
        ),
        (
            "PUBACK with 3 bytes (3.1.1)",
            V3,
            vec![0x40, 0x03, 0x00, 0x01, 0x00],
            M,
        ),
        ("PUBACK with 1 byte", V5, vec![0x40, 0x01, 0x00], M),
        ("PUBACK empty", V3, vec![0x40, 0x00], M),
        (
            "PUBACK reason 0x92",
            V5,
            vec![0x40, 0x03, 0x00, 0x01, 0x92],
            M,
        ),
        (
            "PUBREC reason 0x01",
            V5,
            vec![0x50, 0x03, 0x00, 0x01, 0x01],
            M,
        ),
        (
            "PUBREL reason 0x10",
            V5,
            vec![0x62, 0x03, 0x00, 0x01, 0x10],
            M,
        ),
        (
            "PUBCOMP reason 0x80",
            V5,
            vec![0x70, 0x03, 0x00, 0x01, 0x80],
            M,
        ),
        (
            "PUBACK property 0x01 not allowed",
            V5,
            frame(0x40, &cat(&[&[0, 1, 0], &props(&[0x01, 1])])),
            M,
        ),
        (
            "PUBREC property length beyond packet",
            V5,
            vec![0x50, 0x05, 0x00, 0x01, 0x00, 0x09, 0x1F],
            M,
        ),
        (
            "PUBACK duplicate Reason String",
            V5,
            frame(
                0x40,
                &cat(&[
                    &[0, 1, 0],
                    &props(&cat(&[&[0x1F], &st(b"a"), &[0x1F], &st(b"b")])),
                ]),
            ),
            P,
        ),
        (
            "PUBACK Reason String with U+0000",
            V5,
            frame(
                0x40,
                &cat(&[&[0, 1, 0], &props(&cat(&[&[0x1F], &st(b"\0")]))]),
            ),
            M,
        ),
        (
            "PUBCOMP trailing byte after properties",
            V5,
            frame(0x70, &cat(&[&[0, 1, 0], &empty, &[0]])),
            M,
        ),
        // ---------------------------------------------------------------- SUBSCRIBE
        (
            "SUBSCRIBE without filters (3.1.1)",
            V3,
            frame(0x82, &[0, 1]),
            P,
        ),
        (
            "SUBSCRIBE without filters (v5)",
            V5,
            subscribe(Some(&empty), &[]),
            P,
        ),
        (
            "SUBSCRIBE packet id 0",
            V3,
            frame(0x82, &cat(&[&[0, 0], &st(b"a"), &[0]])),
            P,
        ),
        (
            "SUBSCRIBE reserved option bits (3.1.1)",
            V3,
            subscribe(None, &cat(&[&st(b"a"), &[0x04]])),
            M,
        ),
        (
            "SUBSCRIBE QoS 3 (3.1.1)",
            V3,
            subscribe(None, &cat(&[&st(b"a"), &[0x03]])),
            M,
        ),
        (
            "SUBSCRIBE reserved option bit 6 (v5)",
            V5,
            subscribe(Some(&empty), &cat(&[&st(b"a"), &[0x40]])),
            M,
        ),
        (
            "SUBSCRIBE reserved option bit 7 (v5)",
            V5,
            subscribe(Some(&empty), &cat(&[&st(b"a"), &[0x81]])),
            M,
        ),
        (
            "SUBSCRIBE QoS 3 (v5)",
            V5,
            subscribe(Some(&empty), &cat(&[&st(b"a"), &[0x03]])),
            P,
        ),
        (
            "SUBSCRIBE Retain Handling 3",
            V5,
            subscribe(Some(&empty), &cat(&[&st(b"a"), &[0x30]])),
            P,
        ),
        (
            "No Local on a shared subscription",
            V5,
            subscribe(Some(&empty), &cat(&[&st(b"$share/g/a"), &[0x04]])),
            P,
        ),
        (
            "filter without options byte",
            V3,
            subscribe(None, &st(b"a")),
            M,
        ),
        (
            "filter length beyond packet",
            V3,
            subscribe(None, &[0, 9, b'a']),
            M,
        ),
        (
            "filter invalid UTF-8",
            V5,
            subscribe(Some(&empty), &cat(&[&st(&[0xF8, 0x88]), &[0]])),
            M,
        ),
        (
            "filter with U+0000",
            V3,
            subscribe(None, &cat(&[&st(b"a\0"), &[0]])),
            M,
        ),
        (
            "SUBSCRIBE Subscription Identifier 0",
            V5,
            subscribe(Some(&props(&[0x0B, 0])), &cat(&[&st(b"a"), &[0]])),
            P,
        ),
        (
            "SUBSCRIBE duplicate Subscription Identifier",
            V5,
            subscribe(Some(&props(&[0x0B, 1, 0x0B, 2])), &cat(&[&st(b"a"), &[0]])),
            P,
        ),
        (
            "SUBSCRIBE Reason String not allowed",
            V5,
            subscribe(
                Some(&props(&cat(&[&[0x1F], &st(b"r")]))),
                &cat(&[&st(b"a"), &[0]]),
            ),
            M,
        ),
        (
            "SUBSCRIBE property length beyond packet",
            V5,
            subscribe(Some(&[0x40]), &cat(&[&st(b"a"), &[0]])),
            M,
        ),
        // ---------------------------------------------------------------- SUBACK
        (
            "SUBACK code 0x03 (3.1.1)",
            V3,
            vec![0x90, 0x03, 0x00, 0x01, 0x03],
            M,
        ),
        (
            "SUBACK code 0x87 (3.1.1)",
            V3,
            vec![0x90, 0x03, 0x00, 0x01, 0x87],
            M,
        ),
        (
            "SUBACK code 0x05 (v5)",
            V5,
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x05],
            M,
        ),
        (
            "SUBACK without codes (3.1.1)",
            V3,
            vec![0x90, 0x02, 0x00, 0x01],
            P,
        ),
        (
            "SUBACK without codes (v5)",
            V5,
            vec![0x90, 0x03, 0x00, 0x01, 0x00],
            P,
        ),
        (
            "SUBACK packet id 0",
            V3,
            vec![0x90, 0x03, 0x00, 0x00, 0x00],
            P,
        ),
        (
            "SUBACK property 0x26 truncated",
            V5,
            vec![0x90, 0x05, 0x00, 0x01, 0x02, 0x26, 0x00],
            M,
        ),
        // ---------------------------------------------------------------- UNSUBSCRIBE
        (
            "UNSUBSCRIBE without filters (3.1.1)",
            V3,
            frame(0xA2, &[0, 1]),
            P,
        ),
        (
            "UNSUBSCRIBE without filters (v5)",
            V5,
            frame(0xA2, &[0, 1, 0]),
            P,
        ),
        (
            "UNSUBSCRIBE packet id 0",
            V3,
            frame(0xA2, &cat(&[&[0, 0], &st(b"a")])),
            P,
        ),
        (
            "UNSUBSCRIBE Reason String not allowed",
            V5,
            frame(
                0xA2,
                &cat(&[&[0, 1], &props(&cat(&[&[0x1F], &st(b"r")])), &st(b"a")]),
            ),
            M,
        ),
        (
            "UNSUBSCRIBE Subscription Identifier not allowed",
            V5,
            frame(0xA2, &cat(&[&[0, 1], &props(&[0x0B, 1]), &st(b"a")])),
            M,
        ),
        (
            "UNSUBSCRIBE filter truncated",
            V3,
            frame(0xA2, &[0, 1, 0, 3, b'a']),
            M,
        ),
        // ---------------------------------------------------------------- UNSUBACK
        (
            "UNSUBACK trailing byte (3.1.1)",
            V3,
            vec![0xB0, 0x03, 0x00, 0x01, 0x00],
            M,
        ),
        (
            "UNSUBACK without codes (v5)",
            V5,
            vec![0xB0, 0x03, 0x00, 0x01, 0x00],
            P,
        ),
        (
            "UNSUBACK code 0x10 (v5)",
            V5,
            vec![0xB0, 0x04, 0x00, 0x01, 0x00, 0x10],
            M,
        ),
        (
            "UNSUBACK packet id 0",
            V5,
            vec![0xB0, 0x04, 0x00, 0x00, 0x00, 0x00],
            P,
        ),
        (
            "UNSUBACK without property length (v5)",
            V5,
            vec![0xB0, 0x02, 0x00, 0x01],
            M,
        ),
        // ---------------------------------------------------------------- DISCONNECT / AUTH
        (
            "DISCONNECT with a body (3.1.1)",
            V3,
            vec![0xE0, 0x01, 0x00],
            M,
        ),
        ("DISCONNECT reason 0x05", V5, vec![0xE0, 0x01, 0x05], M),
        ("DISCONNECT reason 0x84", V5, vec![0xE0, 0x01, 0x84], M),
        (
            "DISCONNECT Receive Maximum not allowed",
            V5,
            frame(0xE0, &cat(&[&[0], &props(&[0x21, 0, 1])])),
            M,
        ),
        (
            "DISCONNECT property length beyond packet",
            V5,
            vec![0xE0, 0x02, 0x00, 0x05],
            M,
        ),
        (
            "DISCONNECT duplicate Session Expiry",
            V5,
            frame(
                0xE0,
                &cat(&[&[0], &props(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1])]),
            ),
            P,
        ),
        (
            "DISCONNECT trailing byte",
            V5,
            frame(0xE0, &cat(&[&[0], &empty, &[1]])),
            M,
        ),
        ("AUTH reason 0x01", V5, vec![0xF0, 0x01, 0x01], M),
        (
            "AUTH Session Expiry not allowed",
            V5,
            frame(0xF0, &cat(&[&[0x18], &props(&[0x11, 0, 0, 0, 1])])),
            M,
        ),
        (
            "AUTH duplicate Authentication Method",
            V5,
            frame(
                0xF0,
                &cat(&[
                    &[0x18],
                    &props(&cat(&[&[0x15], &st(b"m"), &[0x15], &st(b"m")])),
                ]),
            ),
            P,
        ),
        (
            "AUTH Authentication Data beyond block",
            V5,
            frame(0xF0, &cat(&[&[0x18], &props(&[0x16, 0, 4, 1])])),
            M,
        ),
    ]
}

/// `decode_publish_view`'s answer in `decode_packet`'s terms, to compare the two.
fn decode_view_as_packet(
    wire: &[u8],
    v: ProtocolVersion,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    decode_publish_view(wire, v, u32::MAX)
        .map(|r| r.map(|(p, n)| (Packet::Publish(p.to_publish().unwrap()), n)))
}

#[test]
fn every_malformed_case_has_its_reason_code() {
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    for (name, version, wire, code) in &cases {
        let got = decode_packet(wire, *version, u32::MAX);
        match &got {
            Err(e) => assert_eq!(e.reason_code(), *code, "{name}: {e}"),
            Ok(p) => panic!("{name}: decoded {p:?}, expected error {code}"),
        }
        let shared = Bytes::copy_from_slice(wire);
        assert_eq!(
            decode_packet_shared(&shared, *version, u32::MAX),
            got,
            "{name}: shared decoder disagrees"
        );
        if let (Some(v), Some(b)) = (version, wire.first()) {
            if b >> 4 == 3 {
                assert_eq!(
                    decode_view_as_packet(wire, *v),
                    got,
                    "{name}: in-place PUBLISH decoder disagrees"
                );
            }
        }
    }
}

#[test]
fn errors_are_reported_before_the_body_when_the_header_proves_them() {
    // First byte alone is enough for flag errors and for "not CONNECT first".
    assert_eq!(
        decode_packet(&[0x36], V5, u32::MAX)
            .unwrap_err()
            .reason_code(),
        M
    );
    assert_eq!(
        decode_packet(&[0x60], V3, u32::MAX)
            .unwrap_err()
            .reason_code(),
        M
    );
    assert_eq!(
        decode_packet(&[0x30], N, u32::MAX)
            .unwrap_err()
            .reason_code(),
        P
    );
    // A valid first byte with an incomplete header just needs more bytes.
    assert_eq!(decode_packet(&[0x30], V5, u32::MAX), Ok(None));
    assert_eq!(decode_packet(&[0x30, 0xFF, 0xFF], V5, u32::MAX), Ok(None));
    assert_eq!(decode_packet(&[], V5, u32::MAX), Ok(None));
    // The 5th remaining-length byte is malformed even without any body.
    assert_eq!(
        decode_fixed_header(&[0x30, 0x80, 0x80, 0x80, 0x80]),
        Err(DecodeError::Malformed(
            "remaining length longer than 4 bytes"
        ))
    );
    assert_eq!(
        decode_fixed_header(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]),
        Ok(Some(FrameHeader {
            first_byte: 0x30,
            remaining_length: 268_435_455,
            header_len: 5
        }))
    );
}

/// Well-formed but invalid topic filters are not decoder errors: the SUBSCRIBE / UNSUBSCRIBE
/// decodes and the state machine answers 0x8F for that filter alone (MQTT 5 sections 3.8.3,
/// 3.9.3, 4.7.1; 3.1.1: SUBACK 0x80). Only invalid UTF-8 or U+0000 stays malformed (1.5.4).
#[test]
fn invalid_but_well_formed_filters_decode_4_7_1() {
    let empty = props(&[]);
    type Case<'a> = (&'a [u8], Option<ProtocolVersion>, Option<&'a [u8]>);
    let subs: &[Case] = &[
        (b"a/#/b", V3, None),
        (b"a+", V5, Some(&empty)),
        (b"x#", V3, None),
        (b"", V3, None),
        (b"$share/g", V5, Some(&empty)),
        (b"$share//a", V5, Some(&empty)),
        (b"$share/g+/a", V3, None),
    ];
    for (f, v, pr) in subs {
        let wire = subscribe(*pr, &cat(&[&st(b"ok"), &[0], &st(f), &[1]]));
        let got = decode_packet(&wire, *v, u32::MAX);
        let Ok(Some((Packet::Subscribe(s), _))) = &got else {
            panic!("{:?}: {got:?}", String::from_utf8_lossy(f));
        };
        assert_eq!(s.filters[1].0.as_bytes(), *f);
        let shared = Bytes::copy_from_slice(&wire);
        assert_eq!(decode_packet_shared(&shared, *v, u32::MAX), got);
    }
    for (f, v, body) in [
        (&b"a/#/"[..], V3, cat(&[&[0, 1], &st(b"a/#/")])),
        (&b""[..], V5, cat(&[&[0, 1, 0], &st(b"")])),
    ] {
        let got = decode_packet(&frame(0xA2, &body), v, u32::MAX);
        let Ok(Some((Packet::Unsubscribe(u), _))) = &got else {
            panic!("{got:?}");
        };
        assert_eq!(u.filters[0].as_bytes(), f);
    }
}

#[test]
fn valid_edge_cases_are_accepted() {
    // Non-minimal remaining length encoding is tolerated.
    let (p, n) = decode_packet(&[0xC0, 0x80, 0x00], V5, u32::MAX)
        .unwrap()
        .unwrap();
    assert_eq!((p, n), (Packet::PingReq, 3));
    // Shared subscription with No Local = 0 and a shared filter with wildcards.
    let wire = subscribe(Some(&props(&[])), &cat(&[&st(b"$share/g/+/x/#"), &[0x2A]]));
    let (p, _) = decode_packet(&wire, V5, u32::MAX).unwrap().unwrap();
    let Packet::Subscribe(s) = p else { panic!() };
    assert_eq!(s.filters[0].0, "$share/g/+/x/#");
    assert_eq!(
        s.filters[0].1,
        SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: false,
            retain_as_published: true,
            retain_handling: 2
        }
    );
    // v5 password without user name is legal.
    let wire = connect(
        b"MQTT",
        5,
        0x42,
        Some(&props(&[])),
        &cat(&[&st(b"c"), &st(b"pw")]),
    );
    let (p, _) = decode_packet(&wire, N, u32::MAX).unwrap().unwrap();
    let Packet::Connect(c) = p else { panic!() };
    assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
    assert_eq!(c.username, None);
    // Several Subscription Identifiers and User Properties in one PUBLISH.
    let wire = publish5(&cat(&[
        &[0x0B, 1, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F],
        &[0x26],
        &st(b"k"),
        &st(b"v"),
        &[0x26],
        &st(b"k"),
        &st(b"v"),
    ]));
    let (p, _) = decode_packet(&wire, V5, u32::MAX).unwrap().unwrap();
    let Packet::Publish(p) = p else { panic!() };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 268_435_455]);
    assert_eq!(p.properties.user_properties.len(), 2);
    assert_eq!(&p.payload[..], b"x");
    // MQTT 5 DISCONNECT with only a reason code, AUTH with a reason and no property length.
    let (p, _) = decode_packet(&[0xE0, 0x01, 0x8E], V5, u32::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(
        p,
        Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER))
    );
    let (p, _) = decode_packet(&[0xF0, 0x01, 0x19], V5, u32::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(
        p,
        Packet::Auth(Auth {
            reason: ReasonCode::RE_AUTHENTICATE,
            properties: AuthProperties::default()
        })
    );
    // 3.1.1 CONNACK return codes map to MQTT 5 reason codes.
    let (p, _) = decode_packet(&[0x20, 0x02, 0x00, 0x05], V3, u32::MAX)
        .unwrap()
        .unwrap();
    let Packet::ConnAck(c) = p else { panic!() };
    assert_eq!(c.code, ReasonCode::NOT_AUTHORIZED);
    // A CONNECT is decoded by its own level even on a 3.1.1 connection (the session decides
    // what a second CONNECT means).
    let wire = connect(b"MQTT", 5, 0x02, Some(&props(&[])), &st(b"c"));
    let (p, _) = decode_packet(&wire, V3, u32::MAX).unwrap().unwrap();
    let Packet::Connect(c) = p else { panic!() };
    assert_eq!(c.protocol, ProtocolVersion::V5);
}

/// The PUBLISH topic check runs eight bytes at a time: a wildcard or U+0000 at any position
/// (in a full word or in the tail) is found, the first offending byte decides the error, and
/// bytes next to the forbidden values (or UTF-8 multi-byte sequences) are accepted.
#[test]
fn publish_topic_check_at_every_position() {
    let check = |topic: &[u8]| {
        let w = frame(0x30, &cat(&[&st(topic), b"payload"]));
        let a = decode_packet(&w, V3, u32::MAX);
        assert_eq!(
            a,
            decode_packet_shared(&Bytes::from(w.clone()), V3, u32::MAX)
        );
        // The in-place decoder skips the UTF-8 validation for an all-ASCII topic: it must
        // give the same answer on every topic.
        assert_eq!(
            decode_view_as_packet(&w, ProtocolVersion::V311),
            a,
            "{topic:?}"
        );
        a
    };
    for len in 1..=40usize {
        let base: Vec<u8> = (0..len).map(|i| b"abcdefgh/ijklmnop"[i % 17]).collect();
        assert!(matches!(check(&base), Ok(Some(_))), "{len}");
        for pos in 0..len {
            for (bad, code) in [(b'+', TN), (b'#', TN), (0u8, M)] {
                let mut t = base.clone();
                t[pos] = bad;
                match check(&t) {
                    Err(e) => assert_eq!(e.reason_code(), code, "{t:?}"),
                    other => panic!("{t:?}: {other:?}"),
                }
            }
            // A byte that is not UTF-8 on its own, a truncated sequence, an overlong form:
            // malformed wherever they are (in an 8-byte word or in the tail).
            for bad in [&[0xFFu8][..], &[0xC3], &[0xC0, 0x80], &[0xE2, 0x82]] {
                let mut t = base.clone();
                t.splice(pos..pos + 1, bad.iter().copied());
                match check(&t) {
                    Err(e) => assert_eq!(e.reason_code(), M, "{t:?}"),
                    other => panic!("{t:?}: {other:?}"),
                }
            }
            // A valid two- and three-byte sequence anywhere.
            for good in ["é", "€"] {
                let mut t = base.clone();
                t.splice(pos..pos + 1, good.bytes());
                assert!(matches!(check(&t), Ok(Some(_))), "{t:?}");
            }
            // Neighbours of '#' (0x23), '+' (0x2B) and 0, and DEL: all valid.
            for ok in [0x01u8, 0x22, 0x24, 0x2A, 0x2C, 0x7F] {
                let mut t = base.clone();
                t[pos] = ok;
                assert!(matches!(check(&t), Ok(Some(_))), "{t:?}");
            }
        }
    }
    // Multi-byte UTF-8 (bytes >= 0x80, some of them 0xA3 / 0xAB = 0x80 | '#' / '+').
    for t in ["é/ü/€/日本/£", "a/\u{E3}\u{AB}/b", "\u{2B23}\u{232B}#"] {
        let r = check(t.as_bytes());
        if t.contains(['+', '#']) {
            assert_eq!(r.unwrap_err().reason_code(), TN, "{t}");
        } else {
            assert!(matches!(r, Ok(Some(_))), "{t}");
        }
    }
    // The first offending byte decides.
    assert_eq!(check(b"abcdefgh\0+").unwrap_err().reason_code(), M);
    assert_eq!(check(b"abcdefgh+\0").unwrap_err().reason_code(), TN);
}
