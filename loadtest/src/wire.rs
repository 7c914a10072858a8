//! Minimal client-side MQTT 3.1.1 / 5.0 codec used by the load generator.
//!
//! Only what a client needs: encoders for the packets a client sends and a
//! decoder for the packets a broker sends. Independent from the broker's own
//! codec on purpose, so the generator does not share bugs with the broker.

/// MQTT protocol level in CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Last will for CONNECT.
#[derive(Clone, Debug)]
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT options.
#[derive(Clone, Debug)]
pub struct ConnectOpts<'a> {
    pub version: Version,
    pub client_id: &'a str,
    pub clean: bool,
    pub keepalive: u16,
    /// v5 Session Expiry Interval property (seconds), if any.
    pub session_expiry: Option<u32>,
    pub will: Option<Will<'a>>,
}

/// Write a variable byte integer (remaining length). Values above 268_435_455 are clamped
/// by the caller never producing them.
pub fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

#[cfg(test)]
fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Encode CONNECT into `out`.
pub fn encode_connect(out: &mut Vec<u8>, o: &ConnectOpts<'_>) {
    let v5 = o.version == Version::V5;
    let mut body = Vec::with_capacity(64);
    put_str(&mut body, b"MQTT");
    body.push(o.version.level());
    let mut flags = 0u8;
    if o.clean {
        flags |= 0x02;
    }
    if let Some(w) = &o.will {
        flags |= 0x04 | ((w.qos & 3) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    body.push(flags);
    body.extend_from_slice(&o.keepalive.to_be_bytes());
    if v5 {
        match o.session_expiry {
            Some(se) => {
                body.push(5);
                body.push(0x11);
                body.extend_from_slice(&se.to_be_bytes());
            }
            None => body.push(0),
        }
    }
    put_str(&mut body, o.client_id.as_bytes());
    if let Some(w) = &o.will {
        if v5 {
            body.push(0); // will properties
        }
        put_str(&mut body, w.topic.as_bytes());
        put_str(&mut body, w.payload);
    }
    out.push(0x10);
    put_varint(out, body.len());
    out.extend_from_slice(&body);
}

/// Encode PUBLISH into `out`. `pid` is ignored for QoS 0.
#[allow(clippy::too_many_arguments)]
pub fn encode_publish(
    out: &mut Vec<u8>,
    version: Version,
    topic: &str,
    qos: u8,
    retain: bool,
    dup: bool,
    pid: u16,
    payload: &[u8],
) {
    let mut rl = 2 + topic.len() + payload.len();
    if qos > 0 {
        rl += 2;
    }
    if version == Version::V5 {
        rl += 1;
    }
    out.push(0x30 | ((dup as u8) << 3) | ((qos & 3) << 1) | retain as u8);
    put_varint(out, rl);
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&pid.to_be_bytes());
    }
    if version == Version::V5 {
        out.push(0);
    }
    out.extend_from_slice(payload);
}

/// Encode SUBSCRIBE with one filter per entry `(filter, max_qos)`.
pub fn encode_subscribe(out: &mut Vec<u8>, version: Version, pid: u16, filters: &[(&str, u8)]) {
    let mut rl = 2 + filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
    if version == Version::V5 {
        rl += 1;
    }
    out.push(0x82);
    put_varint(out, rl);
    out.extend_from_slice(&pid.to_be_bytes());
    if version == Version::V5 {
        out.push(0);
    }
    for (f, q) in filters {
        put_str(out, f.as_bytes());
        out.push(q & 3);
    }
}

pub fn encode_pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xC0, 0x00]);
}

/// DISCONNECT with reason 0 (valid for both versions).
pub fn encode_disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xE0, 0x00]);
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70) with success reason.
pub fn encode_ack(out: &mut Vec<u8>, first_byte: u8, pid: u16) {
    out.push(first_byte);
    out.push(2);
    out.extend_from_slice(&pid.to_be_bytes());
}

pub const PUBACK: u8 = 0x40;
pub const PUBREC: u8 = 0x50;
pub const PUBREL: u8 = 0x62;
pub const PUBCOMP: u8 = 0x70;

/// A packet received from the broker. Slices borrow the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    ConnAck {
        session_present: bool,
        code: u8,
        /// v5 Receive Maximum property, if present.
        receive_max: Option<u16>,
    },
    SubAck {
        pid: u16,
        codes: &'a [u8],
    },
    Publish {
        qos: u8,
        dup: bool,
        retain: bool,
        topic: &'a [u8],
        pid: u16,
        payload: &'a [u8],
    },
    PubAck {
        pid: u16,
        code: u8,
    },
    PubRec {
        pid: u16,
        code: u8,
    },
    PubRel {
        pid: u16,
    },
    PubComp {
        pid: u16,
    },
    PingResp,
    Disconnect {
        code: u8,
    },
    /// Any other packet type (first byte kept).
    Other(u8),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum WireError {
    BadLength,
    Malformed,
    TooLarge,
}

/// Read a variable byte integer; `Ok(None)` if more bytes are needed.
pub fn get_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, WireError> {
    let mut v = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        v |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Err(WireError::BadLength)
}

fn be16(b: &[u8], at: usize) -> Result<u16, WireError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(WireError::Malformed),
    }
}

/// Skip a v5 property block at `at`, returning the offset after it.
fn skip_props(b: &[u8], at: usize) -> Result<usize, WireError> {
    let (len, n) =
        get_varint(b.get(at..).ok_or(WireError::Malformed)?)?.ok_or(WireError::Malformed)?;
    let end = at + n + len;
    if end > b.len() {
        return Err(WireError::Malformed);
    }
    Ok(end)
}

/// Find Receive Maximum (0x21) in a CONNACK property block. Stops at the first unknown id.
fn find_receive_max(props: &[u8]) -> Option<u16> {
    let mut i = 0;
    while i < props.len() {
        let id = props[i];
        i += 1;
        let skip = match id {
            0x21 => return be16(props, i).ok(),
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x22 => 2,
            0x11 | 0x27 => 4,
            0x12 | 0x1A | 0x1C | 0x1F | 0x15 | 0x16 => 2 + be16(props, i).ok()? as usize,
            0x26 => {
                let a = be16(props, i).ok()? as usize;
                let b = be16(props, i + 2 + a).ok()? as usize;
                4 + a + b
            }
            _ => return None,
        };
        i += skip;
    }
    None
}

/// Decode one packet from the front of `buf`. `Ok(None)` = need more bytes.
/// Returns the packet and the number of bytes consumed. `max` bounds the packet size.
pub fn decode(
    buf: &[u8],
    version: Version,
    max: usize,
) -> Result<Option<(Packet<'_>, usize)>, WireError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let first = buf[0];
    let Some((rl, n)) = get_varint(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + n + rl;
    if total > max {
        return Err(WireError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let b = &buf[1 + n..total];
    let v5 = version == Version::V5;
    let pkt = match first >> 4 {
        2 => {
            if b.len() < 2 {
                return Err(WireError::Malformed);
            }
            let mut receive_max = None;
            if v5 && b.len() > 2 {
                let end = skip_props(b, 2)?;
                let (_, pn) = get_varint(&b[2..])?.ok_or(WireError::Malformed)?;
                receive_max = find_receive_max(&b[2 + pn..end]);
            }
            Packet::ConnAck {
                session_present: b[0] & 1 == 1,
                code: b[1],
                receive_max,
            }
        }
        9 => {
            let pid = be16(b, 0)?;
            let at = if v5 { skip_props(b, 2)? } else { 2 };
            Packet::SubAck {
                pid,
                codes: &b[at..],
            }
        }
        3 => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err(WireError::Malformed);
            }
            let tl = be16(b, 0)? as usize;
            let mut at = 2 + tl;
            let topic = b.get(2..at).ok_or(WireError::Malformed)?;
            let mut pid = 0;
            if qos > 0 {
                pid = be16(b, at)?;
                at += 2;
            }
            if v5 {
                at = skip_props(b, at)?;
            }
            let payload = b.get(at..).ok_or(WireError::Malformed)?;
            Packet::Publish {
                qos,
                dup: first & 8 != 0,
                retain: first & 1 != 0,
                topic,
                pid,
                payload,
            }
        }
        4..=7 => {
            let pid = be16(b, 0)?;
            let code = b.get(2).copied().unwrap_or(0);
            match first >> 4 {
                4 => Packet::PubAck { pid, code },
                5 => Packet::PubRec { pid, code },
                6 => Packet::PubRel { pid },
                _ => Packet::PubComp { pid },
            }
        }
        13 => Packet::PingResp,
        14 => Packet::Disconnect {
            code: b.first().copied().unwrap_or(0),
        },
        _ => Packet::Other(first),
    };
    Ok(Some((pkt, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut o = Vec::new();
            put_varint(&mut o, v);
            assert_eq!(o.len(), varint_len(v));
            assert_eq!(get_varint(&o).unwrap(), Some((v, o.len())));
        }
        assert_eq!(get_varint(&[0x80, 0x80]).unwrap(), None);
        assert_eq!(
            get_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(WireError::BadLength)
        );
    }

    #[test]
    fn connect_v311_bytes() {
        let mut o = Vec::new();
        encode_connect(
            &mut o,
            &ConnectOpts {
                version: Version::V311,
                client_id: "ab",
                clean: true,
                keepalive: 60,
                session_expiry: None,
                will: None,
            },
        );
        assert_eq!(
            o,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b']
        );
    }

    #[test]
    fn connect_v5_will_and_expiry() {
        let mut o = Vec::new();
        encode_connect(
            &mut o,
            &ConnectOpts {
                version: Version::V5,
                client_id: "c",
                clean: false,
                keepalive: 5,
                session_expiry: Some(300),
                will: Some(Will {
                    topic: "w",
                    payload: b"xy",
                    qos: 1,
                    retain: true,
                }),
            },
        );
        // header, "MQTT", level 5, flags = will|qos1|retain, ka, props(5: 0x11 300)
        assert_eq!(&o[..2], &[0x10, (o.len() - 2) as u8]);
        assert_eq!(o[8], 5);
        assert_eq!(o[9], 0x04 | 0x08 | 0x20);
        assert_eq!(&o[10..12], &[0, 5]);
        assert_eq!(&o[12..18], &[5, 0x11, 0, 0, 1, 44]);
        assert_eq!(&o[18..21], &[0, 1, b'c']);
        assert_eq!(o[21], 0); // will props
        assert_eq!(&o[22..], &[0, 1, b'w', 0, 2, b'x', b'y']);
    }

    #[test]
    fn publish_roundtrip_both_versions() {
        for v in [Version::V311, Version::V5] {
            for qos in 0..3u8 {
                let mut o = Vec::new();
                let payload = vec![7u8; 300];
                encode_publish(&mut o, v, "a/b", qos, false, qos == 1, 0x1234, &payload);
                let (p, used) = decode(&o, v, 1 << 20).unwrap().unwrap();
                assert_eq!(used, o.len());
                assert_eq!(
                    p,
                    Packet::Publish {
                        qos,
                        dup: qos == 1,
                        retain: false,
                        topic: b"a/b",
                        pid: if qos > 0 { 0x1234 } else { 0 },
                        payload: &payload
                    }
                );
                // every strict prefix needs more bytes
                for cut in 0..o.len() {
                    assert_eq!(decode(&o[..cut], v, 1 << 20).unwrap(), None);
                }
            }
        }
    }

    #[test]
    fn subscribe_bytes() {
        let mut o = Vec::new();
        encode_subscribe(&mut o, Version::V5, 7, &[("t/#", 1)]);
        assert_eq!(o, [0x82, 9, 0, 7, 0, 0, 3, b't', b'/', b'#', 1]);
    }

    #[test]
    fn decode_broker_packets() {
        let v = Version::V5;
        // CONNACK v5 with receive maximum 20 and a topic alias max
        let c = [0x20, 9, 1, 0, 6, 0x22, 0, 10, 0x21, 0, 20];
        let (p, n) = decode(&c, v, 1024).unwrap().unwrap();
        assert_eq!(n, c.len());
        assert_eq!(
            p,
            Packet::ConnAck {
                session_present: true,
                code: 0,
                receive_max: Some(20)
            }
        );
        // CONNACK v3
        let (p, _) = decode(&[0x20, 2, 0, 5], Version::V311, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            Packet::ConnAck {
                session_present: false,
                code: 5,
                receive_max: None
            }
        );
        let (p, _) = decode(&[0x90, 4, 0, 9, 0, 1], v, 1024).unwrap().unwrap();
        assert_eq!(
            p,
            Packet::SubAck {
                pid: 9,
                codes: &[1]
            }
        );
        let (p, _) = decode(&[0x90, 3, 0, 9, 0x80], Version::V311, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            Packet::SubAck {
                pid: 9,
                codes: &[0x80]
            }
        );
        assert_eq!(
            decode(&[0x40, 2, 0, 3], v, 64).unwrap().unwrap().0,
            Packet::PubAck { pid: 3, code: 0 }
        );
        assert_eq!(
            decode(&[0x50, 3, 0, 3, 0x10], v, 64).unwrap().unwrap().0,
            Packet::PubRec { pid: 3, code: 0x10 }
        );
        assert_eq!(
            decode(&[0x62, 2, 0, 3], v, 64).unwrap().unwrap().0,
            Packet::PubRel { pid: 3 }
        );
        assert_eq!(
            decode(&[0x70, 2, 0, 3], v, 64).unwrap().unwrap().0,
            Packet::PubComp { pid: 3 }
        );
        assert_eq!(
            decode(&[0xD0, 0], v, 64).unwrap().unwrap().0,
            Packet::PingResp
        );
        assert_eq!(
            decode(&[0xE0, 1, 0x8E], v, 64).unwrap().unwrap().0,
            Packet::Disconnect { code: 0x8E }
        );
        assert_eq!(
            decode(&[0xE0, 0], v, 64).unwrap().unwrap().0,
            Packet::Disconnect { code: 0 }
        );
    }

    #[test]
    fn decode_rejects_garbage_without_panic() {
        assert_eq!(
            decode(&[0x30, 5, 0, 9, 1, 2, 3], Version::V311, 64),
            Err(WireError::Malformed)
        );
        assert_eq!(
            decode(&[0x36, 2, 0, 0], Version::V311, 64),
            Err(WireError::Malformed)
        );
        assert_eq!(
            decode(&[0x30, 0x80, 0x01], Version::V311, 64),
            Err(WireError::TooLarge)
        );
        assert_eq!(
            decode(&[0x40, 1, 0], Version::V311, 64),
            Err(WireError::Malformed)
        );
        // exhaustive small fuzz: no panic on any 3-byte input for either version
        for a in 0..=255u8 {
            for b in 0..8u8 {
                for c in [0u8, 1, 0x21, 0xff] {
                    let _ = decode(&[a, b, c, c, c], Version::V5, 64);
                    let _ = decode(&[a, b, c, c, c], Version::V311, 64);
                }
            }
        }
    }

    #[test]
    fn ack_bytes() {
        let mut o = Vec::new();
        encode_ack(&mut o, PUBREL, 0x0102);
        encode_pingreq(&mut o);
        encode_disconnect(&mut o);
        assert_eq!(o, [0x62, 2, 1, 2, 0xC0, 0, 0xE0, 0]);
    }
}
