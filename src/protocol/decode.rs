//! Packet decoder:
//!
//! `decode_packet(buf, version, max_packet_size)`:
//! - `buf` may hold a partial packet, exactly one, or several.
//! - `Ok(None)`: more bytes are needed (never an error for a merely short buffer, unless the
//!   fixed header already proves the packet is too large or malformed).
//! - `Ok(Some((packet, consumed)))`: one packet decoded from `buf[..consumed]`.
//! - `Err(e)`: malformed / protocol error; the connection must be closed with `e.reason_code()`.
//! - `version` is `None` before CONNECT (only a CONNECT may be decoded then: anything else is
//!   `DecodeError::Protocol`) and the negotiated version afterwards.
//! - `max_packet_size` bounds the whole packet (fixed header included), `DecodeError::TooLarge`.
//!
//! Implementation notes:
//! - A CONNECT is decoded according to its own protocol level, whatever `version` says (a
//!   second CONNECT is a session-level protocol error, not a codec one).
//! - [`decode_packet`] copies every string / binary field out of `buf` exactly once (a PUBLISH
//!   payload is copied once into its own `Bytes`; PINGREQ/PINGRESP and acks without properties
//!   allocate nothing). [`decode_packet_shared`] slices the caller's `Bytes` instead: no copy.
//! - [`decode_publish_view`] reads a PUBLISH in place (a [`PublishView`] of borrowed slices, no
//!   allocation, no reference count): the broker worker's path for PUBLISH. It makes exactly
//!   the checks `decode_packet` makes and returns the same errors (tests and the fuzz target
//!   hold them to that).
//! - Variable byte integers are accepted in non-minimal form (at most 4 bytes).
//! - The direction of a packet is not known here: rules that depend on it (a client must not
//!   send a Subscription Identifier in PUBLISH, a server never receives CONNACK, ...) are the
//!   session's job.
use bytes::Bytes;
use bytestring::ByteString;

use super::error::DecodeError;
use super::reason::ReasonCode;
use super::topic::parse_shared;
use super::types::*;

/// Parsed fixed header: first byte and remaining length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub first_byte: u8,
    pub remaining_length: u32,
    /// Length of the fixed header itself (2..=5).
    pub header_len: usize,
}

impl FrameHeader {
    /// Size of the whole packet: fixed header plus remaining length.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_length as usize
    }
}

/// Parses the fixed header. `Ok(None)` when `buf` does not hold it completely yet.
/// A remaining length whose 4th byte still has the continuation bit set is malformed.
/// The first byte is not validated here (see [`decode_packet`]).
#[inline]
pub fn decode_fixed_header(buf: &[u8]) -> Result<Option<FrameHeader>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b1 = buf[1];
    if b1 & 0x80 == 0 {
        return Ok(Some(FrameHeader {
            first_byte: buf[0],
            remaining_length: b1 as u32,
            header_len: 2,
        }));
    }
    let mut value = (b1 & 0x7F) as u32;
    for i in 1..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        value |= ((b & 0x7F) as u32) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(FrameHeader {
                first_byte: buf[0],
                remaining_length: value,
                header_len: 2 + i,
            }));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length longer than 4 bytes",
    ))
}

/// Decodes one packet from `buf`, copying string and binary fields out of it.
pub fn decode_packet(
    buf: &[u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    decode_from(SliceSrc(buf), version, max_packet_size)
}

/// Same as [`decode_packet`] but zero-copy: strings and binary fields of the packet are
/// slices of `buf` (which stays shared until they are dropped).
pub fn decode_packet_shared(
    buf: &Bytes,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    decode_from(SharedSrc(buf), version, max_packet_size)
}

/// If `buf` starts with a CONNECT whose protocol name and level are readable, the version it
/// asks for (`None` otherwise). Lets the caller answer a CONNECT it could not decode with a
/// CONNACK in the client's own format.
pub fn connect_version_hint(buf: &[u8]) -> Option<ProtocolVersion> {
    let h = decode_fixed_header(buf).ok()??;
    if h.first_byte != 0x10 {
        return None;
    }
    let v = buf.get(h.header_len..h.header_len + 7)?;
    if v[..6] != [0, 4, b'M', b'Q', b'T', b'T'] {
        let v = buf.get(h.header_len..h.header_len + 9)?;
        return (v == [0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3])
            .then_some(ProtocolVersion::V31);
    }
    match v[6] {
        4 => Some(ProtocolVersion::V311),
        5 => Some(ProtocolVersion::V5),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Byte sources: copy out of a slice, or share a `Bytes`.
// ---------------------------------------------------------------------------------------------

trait Source: Copy {
    fn data(&self) -> &[u8];
    /// `data()[start..end]` as owned `Bytes`. `start <= end <= len` is guaranteed by the caller.
    fn binary(&self, start: usize, end: usize) -> Bytes;
    /// `data()[start..end]` as a `ByteString`; invalid UTF-8 is malformed.
    fn string(&self, start: usize, end: usize) -> Result<ByteString, DecodeError>;
}

#[derive(Clone, Copy)]
struct SliceSrc<'a>(&'a [u8]);

impl Source for SliceSrc<'_> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self.0
    }
    #[inline(always)]
    fn binary(&self, start: usize, end: usize) -> Bytes {
        if start == end {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&self.0[start..end])
        }
    }
    #[inline(always)]
    fn string(&self, start: usize, end: usize) -> Result<ByteString, DecodeError> {
        let s = std::str::from_utf8(&self.0[start..end])
            .map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))?;
        if s.is_empty() {
            Ok(ByteString::new())
        } else {
            Ok(ByteString::from(s))
        }
    }
}

#[derive(Clone, Copy)]
struct SharedSrc<'a>(&'a Bytes);

impl Source for SharedSrc<'_> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self.0
    }
    #[inline(always)]
    fn binary(&self, start: usize, end: usize) -> Bytes {
        if start == end {
            Bytes::new()
        } else {
            self.0.slice(start..end)
        }
    }
    #[inline(always)]
    fn string(&self, start: usize, end: usize) -> Result<ByteString, DecodeError> {
        if start == end {
            return Ok(ByteString::new());
        }
        ByteString::try_from(self.0.slice(start..end))
            .map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))
    }
}

/// Validates like [`SliceSrc`] but keeps nothing: strings are UTF-8 checked, binary fields are
/// skipped. Used to check a property block once without allocating ([`decode_packet_view`]).
#[derive(Clone, Copy)]
struct CheckSrc<'a>(&'a [u8]);

impl Source for CheckSrc<'_> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self.0
    }
    #[inline(always)]
    fn binary(&self, _start: usize, _end: usize) -> Bytes {
        Bytes::new()
    }
    #[inline(always)]
    fn string(&self, start: usize, end: usize) -> Result<ByteString, DecodeError> {
        std::str::from_utf8(&self.0[start..end])
            .map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))?;
        Ok(ByteString::new())
    }
}

// ---------------------------------------------------------------------------------------------
// Reader over the body of one packet.
// ---------------------------------------------------------------------------------------------

const E_SHORT: DecodeError = DecodeError::Malformed("field runs past the end of the packet");

struct Reader<'a, S: Source> {
    src: S,
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a, S: Source> Reader<'a, S> {
    #[inline(always)]
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= self.end {
            return Err(E_SHORT);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.remaining() < 2 {
            return Err(E_SHORT);
        }
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.remaining() < 4 {
            return Err(E_SHORT);
        }
        let p = self.pos;
        let v = u32::from_be_bytes([
            self.buf[p],
            self.buf[p + 1],
            self.buf[p + 2],
            self.buf[p + 3],
        ]);
        self.pos += 4;
        Ok(v)
    }

    /// Variable byte integer (1..=4 bytes).
    #[inline]
    fn vbi(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            value |= ((b & 0x7F) as u32) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// Two-byte length prefix, returns the byte range of the data.
    #[inline(always)]
    fn prefixed(&mut self) -> Result<(usize, usize), DecodeError> {
        let len = self.u16()? as usize;
        if self.remaining() < len {
            return Err(E_SHORT);
        }
        let start = self.pos;
        self.pos += len;
        Ok((start, self.pos))
    }

    /// UTF-8 encoded string: valid UTF-8, no U+0000.
    #[inline]
    fn string(&mut self) -> Result<ByteString, DecodeError> {
        let (start, end) = self.prefixed()?;
        if self.buf[start..end].contains(&0) {
            return Err(DecodeError::Malformed("U+0000 in a UTF-8 string"));
        }
        self.src.string(start, end)
    }

    #[inline]
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let (start, end) = self.prefixed()?;
        Ok(self.src.binary(start, end))
    }

    /// The rest of the packet as binary (a payload).
    #[inline]
    fn rest(&mut self) -> Bytes {
        let b = self.src.binary(self.pos, self.end);
        self.pos = self.end;
        b
    }

    #[inline]
    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        let id = self.u16()?;
        if id == 0 {
            return Err(DecodeError::Protocol("packet identifier 0"));
        }
        Ok(id)
    }

    #[inline]
    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos != self.end {
            return Err(DecodeError::Malformed(
                "remaining length does not match the packet content",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Top level
// ---------------------------------------------------------------------------------------------

const T_CONNECT: u8 = 1;
const T_CONNACK: u8 = 2;
const T_PUBLISH: u8 = 3;
const T_PUBACK: u8 = 4;
const T_PUBREC: u8 = 5;
const T_PUBREL: u8 = 6;
const T_PUBCOMP: u8 = 7;
const T_SUBSCRIBE: u8 = 8;
const T_SUBACK: u8 = 9;
const T_UNSUBSCRIBE: u8 = 10;
const T_UNSUBACK: u8 = 11;
const T_PINGREQ: u8 = 12;
const T_PINGRESP: u8 = 13;
const T_DISCONNECT: u8 = 14;
const T_AUTH: u8 = 15;

/// Validates the first byte of the fixed header (packet type and flags) for the connection
/// state `version`.
#[inline]
fn check_first_byte(b: u8, version: Option<ProtocolVersion>) -> Result<(), DecodeError> {
    let ty = b >> 4;
    let flags = b & 0x0F;
    let Some(v) = version else {
        if ty != T_CONNECT {
            return Err(DecodeError::Protocol("first packet is not CONNECT"));
        }
        if flags != 0 {
            return Err(DecodeError::Malformed("invalid fixed header flags"));
        }
        return Ok(());
    };
    match ty {
        T_PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(DecodeError::Malformed("PUBLISH with QoS 3"));
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(DecodeError::Malformed("PUBLISH QoS 0 with DUP set"));
            }
            Ok(())
        }
        T_PUBREL | T_SUBSCRIBE | T_UNSUBSCRIBE => {
            // MQTT 3.1 (section 2.1) sets DUP on a retransmitted PUBREL / SUBSCRIBE /
            // UNSUBSCRIBE.
            let dup_ok = v == ProtocolVersion::V31 && flags == 0b1010;
            if flags != 0b0010 && !dup_ok {
                return Err(DecodeError::Malformed("invalid fixed header flags"));
            }
            Ok(())
        }
        0 => Err(DecodeError::Malformed("reserved packet type 0")),
        T_AUTH if !v.is_v5() => Err(DecodeError::Malformed("reserved packet type 15")),
        _ => {
            if flags != 0 {
                return Err(DecodeError::Malformed("invalid fixed header flags"));
            }
            Ok(())
        }
    }
}

/// The checks every decode starts with: first byte valid for the connection state, fixed
/// header complete, packet within `max_packet_size`, whole packet in `buf` (`Ok(None)` if not).
#[inline(always)]
fn frame(
    buf: &[u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<FrameHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some(h) = decode_fixed_header(buf)? else {
        return Ok(None);
    };
    let total = h.packet_len();
    if total > max_packet_size as usize {
        return Err(DecodeError::TooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(h))
}

#[inline(always)]
fn decode_from<S: Source>(
    src: S,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let buf = src.data();
    let Some(h) = frame(buf, version, max_packet_size)? else {
        return Ok(None);
    };
    let first = h.first_byte;
    let total = h.packet_len();
    let mut r = Reader {
        src,
        buf,
        pos: h.header_len,
        end: total,
    };
    let flags = first & 0x0F;
    // Before CONNECT only CONNECT passes check_first_byte, so the version is known below.
    let v = version.unwrap_or(ProtocolVersion::V5);
    // The hot packets return directly: building a `Packet` in a local and moving it into the
    // result costs a copy of the whole enum (~260 bytes), more than a PINGREQ decode itself.
    let packet = match first >> 4 {
        T_PUBLISH => {
            // `rest()` consumes the body: nothing left for `finish` to reject.
            let p = decode_publish(&mut r, flags, v)?;
            return Ok(Some((Packet::Publish(p), total)));
        }
        T_PINGREQ | T_PINGRESP => {
            if h.remaining_length != 0 {
                return Err(DecodeError::Malformed("PINGREQ/PINGRESP with a body"));
            }
            return Ok(Some((
                if first >> 4 == T_PINGREQ {
                    Packet::PingReq
                } else {
                    Packet::PingResp
                },
                total,
            )));
        }
        T_PUBACK => Packet::PubAck(decode_pub_resp(&mut r, v, PUBACK_CODES)?),
        T_PUBREC => Packet::PubRec(decode_pub_resp(&mut r, v, PUBACK_CODES)?),
        T_PUBREL => Packet::PubRel(decode_pub_resp(&mut r, v, PUBREL_CODES)?),
        T_PUBCOMP => Packet::PubComp(decode_pub_resp(&mut r, v, PUBREL_CODES)?),
        T_CONNECT => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        T_CONNACK => Packet::ConnAck(decode_connack(&mut r, v)?),
        T_SUBSCRIBE => Packet::Subscribe(decode_subscribe(&mut r, v)?),
        T_SUBACK => Packet::SubAck(decode_suback(&mut r, v)?),
        T_UNSUBSCRIBE => Packet::Unsubscribe(decode_unsubscribe(&mut r, v)?),
        T_UNSUBACK => Packet::UnsubAck(decode_unsuback(&mut r, v)?),
        T_DISCONNECT => Packet::Disconnect(decode_disconnect(&mut r, v)?),
        T_AUTH => Packet::Auth(decode_auth(&mut r)?),
        // Type 0 is rejected by check_first_byte.
        _ => return Err(DecodeError::Malformed("reserved packet type")),
    };
    r.finish()?;
    Ok(Some((packet, total)))
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

mod pid {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}
pub(crate) use pid::*;

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1u64 << ids[i];
        i += 1;
    }
    m
}

const CONNECT_PROPS: u64 = mask(&[
    SESSION_EXPIRY_INTERVAL,
    RECEIVE_MAXIMUM,
    MAXIMUM_PACKET_SIZE,
    TOPIC_ALIAS_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    REQUEST_PROBLEM_INFORMATION,
    USER_PROPERTY,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
]);
const WILL_PROPS: u64 = mask(&[
    WILL_DELAY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
]);
const CONNACK_PROPS: u64 = mask(&[
    SESSION_EXPIRY_INTERVAL,
    RECEIVE_MAXIMUM,
    MAXIMUM_QOS,
    RETAIN_AVAILABLE,
    MAXIMUM_PACKET_SIZE,
    ASSIGNED_CLIENT_IDENTIFIER,
    TOPIC_ALIAS_MAXIMUM,
    REASON_STRING,
    USER_PROPERTY,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    SHARED_SUBSCRIPTION_AVAILABLE,
    SERVER_KEEP_ALIVE,
    RESPONSE_INFORMATION,
    SERVER_REFERENCE,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
]);
const PUBLISH_PROPS: u64 = mask(&[
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    TOPIC_ALIAS,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
    SUBSCRIPTION_IDENTIFIER,
    CONTENT_TYPE,
]);
const ACK_PROPS: u64 = mask(&[REASON_STRING, USER_PROPERTY]);
const SUBSCRIBE_PROPS: u64 = mask(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]);
const UNSUBSCRIBE_PROPS: u64 = mask(&[USER_PROPERTY]);
const DISCONNECT_PROPS: u64 = mask(&[
    SESSION_EXPIRY_INTERVAL,
    REASON_STRING,
    USER_PROPERTY,
    SERVER_REFERENCE,
]);
const AUTH_PROPS: u64 = mask(&[
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    REASON_STRING,
    USER_PROPERTY,
]);

/// One decoded property value; the variant is fixed by the identifier.
enum Prop {
    Byte(u8),
    U16(u16),
    U32(u32),
    Str(ByteString),
    Bin(Bytes),
    Pair(ByteString, ByteString),
}

/// Reads a property block (length + properties) and hands each property to `f`.
/// Checks: block within the packet, identifier known and allowed (`allowed`), no duplicates
/// except those in `multi`, value ranges common to every packet.
#[inline]
fn read_props<S: Source>(
    r: &mut Reader<'_, S>,
    allowed: u64,
    multi: u64,
    mut f: impl FnMut(u8, Prop) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.vbi()? as usize;
    if len > r.remaining() {
        return Err(DecodeError::Malformed(
            "property length runs past the end of the packet",
        ));
    }
    if len == 0 {
        return Ok(());
    }
    let outer_end = r.end;
    r.end = r.pos + len;
    let mut seen = 0u64;
    while r.pos < r.end {
        // A Variable Byte Integer, but every identifier defined is a single byte (< 0x80): a
        // continuation bit always means an unknown identifier.
        let id = r.u8()?;
        if id >= 64 || allowed & (1u64 << id) == 0 {
            return Err(DecodeError::Malformed(
                "property identifier not valid for this packet",
            ));
        }
        let bit = 1u64 << id;
        if seen & bit != 0 && multi & bit == 0 {
            return Err(DecodeError::Protocol("property included more than once"));
        }
        seen |= bit;
        let value = match id {
            PAYLOAD_FORMAT_INDICATOR
            | REQUEST_PROBLEM_INFORMATION
            | REQUEST_RESPONSE_INFORMATION
            | MAXIMUM_QOS
            | RETAIN_AVAILABLE
            | WILDCARD_SUBSCRIPTION_AVAILABLE
            | SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | SHARED_SUBSCRIPTION_AVAILABLE => {
                let b = r.u8()?;
                if b > 1 {
                    return Err(DecodeError::Protocol("property value must be 0 or 1"));
                }
                Prop::Byte(b)
            }
            SERVER_KEEP_ALIVE | TOPIC_ALIAS_MAXIMUM => Prop::U16(r.u16()?),
            RECEIVE_MAXIMUM => {
                let v = r.u16()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("Receive Maximum of 0"));
                }
                Prop::U16(v)
            }
            TOPIC_ALIAS => {
                let v = r.u16()?;
                if v == 0 {
                    return Err(DecodeError::TopicAliasInvalid("Topic Alias of 0"));
                }
                Prop::U16(v)
            }
            MESSAGE_EXPIRY_INTERVAL | SESSION_EXPIRY_INTERVAL | WILL_DELAY_INTERVAL => {
                Prop::U32(r.u32()?)
            }
            MAXIMUM_PACKET_SIZE => {
                let v = r.u32()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("Maximum Packet Size of 0"));
                }
                Prop::U32(v)
            }
            SUBSCRIPTION_IDENTIFIER => {
                let v = r.vbi()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("Subscription Identifier of 0"));
                }
                Prop::U32(v)
            }
            RESPONSE_TOPIC => {
                // Checked on the wire bytes: a `CheckSrc` returns no string.
                let start = r.pos + 2;
                let s = r.string()?;
                let raw = &r.buf[start..r.pos];
                if raw.is_empty() || raw.iter().any(|&b| b == b'+' || b == b'#') {
                    return Err(DecodeError::Protocol("invalid Response Topic"));
                }
                Prop::Str(s)
            }
            CONTENT_TYPE
            | ASSIGNED_CLIENT_IDENTIFIER
            | AUTHENTICATION_METHOD
            | RESPONSE_INFORMATION
            | SERVER_REFERENCE
            | REASON_STRING => Prop::Str(r.string()?),
            CORRELATION_DATA | AUTHENTICATION_DATA => Prop::Bin(r.binary()?),
            USER_PROPERTY => {
                let k = r.string()?;
                let v = r.string()?;
                Prop::Pair(k, v)
            }
            _ => {
                return Err(DecodeError::Malformed(
                    "property identifier not valid for this packet",
                ))
            }
        };
        f(id, value)?;
    }
    // r.pos == r.end here: every read is bounded by the property block.
    r.end = outer_end;
    Ok(())
}

const E_PROP: DecodeError = DecodeError::Malformed("property identifier not valid for this packet");

// Typed extraction helpers (the variant always matches the identifier).
fn p_u8(p: Prop) -> Result<Option<u8>, DecodeError> {
    match p {
        Prop::Byte(b) => Ok(Some(b)),
        _ => Err(E_PROP),
    }
}
fn p_u16(p: Prop) -> Result<Option<u16>, DecodeError> {
    match p {
        Prop::U16(v) => Ok(Some(v)),
        _ => Err(E_PROP),
    }
}
fn p_u32(p: Prop) -> Result<Option<u32>, DecodeError> {
    match p {
        Prop::U32(v) => Ok(Some(v)),
        _ => Err(E_PROP),
    }
}
fn p_str(p: Prop) -> Result<Option<ByteString>, DecodeError> {
    match p {
        Prop::Str(v) => Ok(Some(v)),
        _ => Err(E_PROP),
    }
}
fn p_bin(p: Prop) -> Result<Option<Bytes>, DecodeError> {
    match p {
        Prop::Bin(v) => Ok(Some(v)),
        _ => Err(E_PROP),
    }
}
fn p_user(p: Prop, list: &mut UserProperties) -> Result<(), DecodeError> {
    match p {
        Prop::Pair(k, v) => {
            list.push((k, v));
            Ok(())
        }
        _ => Err(E_PROP),
    }
}

const USER_ONLY: u64 = 1u64 << USER_PROPERTY;

fn read_ack_props<S: Source>(r: &mut Reader<'_, S>) -> Result<AckProperties, DecodeError> {
    let mut props = AckProperties::default();
    read_props(r, ACK_PROPS, USER_ONLY, |id, p| {
        match id {
            REASON_STRING => props.reason_string = p_str(p)?,
            _ => p_user(p, &mut props.user_properties)?,
        }
        Ok(())
    })?;
    Ok(props)
}

// ---------------------------------------------------------------------------------------------
// Reason codes allowed per packet (MQTT 5)
// ---------------------------------------------------------------------------------------------

const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

#[inline]
fn reason(b: u8, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    if allowed.contains(&b) {
        Ok(ReasonCode(b))
    } else {
        Err(DecodeError::Malformed(
            "reason code not valid for this packet",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------------------------

fn decode_connect<S: Source>(r: &mut Reader<'_, S>) -> Result<Connect, DecodeError> {
    let (ns, ne) = r.prefixed()?;
    let name = &r.buf[ns..ne];
    let level = r.u8()?;
    let protocol = match (name, level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", l) | (b"MQIsdp", l) => return Err(DecodeError::UnsupportedProtocolVersion(l)),
        _ => return Err(DecodeError::Protocol("unknown protocol name")),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if will_qos == 3 {
        return Err(DecodeError::Malformed("Will QoS 3"));
    }
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "Will QoS or Will Retain set without the Will Flag",
        ));
    }
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::Malformed("password without user name (3.1.1)"));
    }
    let keep_alive = r.u16()?;

    let mut properties = ConnectProperties::default();
    if v5 {
        let p = &mut properties;
        read_props(r, CONNECT_PROPS, USER_ONLY, |id, v| {
            match id {
                SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = p_u32(v)?,
                RECEIVE_MAXIMUM => p.receive_maximum = p_u16(v)?,
                MAXIMUM_PACKET_SIZE => p.maximum_packet_size = p_u32(v)?,
                TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = p_u16(v)?,
                REQUEST_RESPONSE_INFORMATION => p.request_response_information = p_u8(v)?,
                REQUEST_PROBLEM_INFORMATION => p.request_problem_information = p_u8(v)?,
                AUTHENTICATION_METHOD => p.authentication_method = p_str(v)?,
                AUTHENTICATION_DATA => p.authentication_data = p_bin(v)?,
                _ => p_user(v, &mut p.user_properties)?,
            }
            Ok(())
        })?;
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::Protocol(
                "Authentication Data without Authentication Method",
            ));
        }
    }

    let client_id = r.string()?;

    let will = if will_flag {
        let mut wp = WillProperties::default();
        if v5 {
            let p = &mut wp;
            read_props(r, WILL_PROPS, USER_ONLY, |id, v| {
                match id {
                    WILL_DELAY_INTERVAL => p.will_delay_interval = p_u32(v)?,
                    PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = p_u8(v)?,
                    MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = p_u32(v)?,
                    CONTENT_TYPE => p.content_type = p_str(v)?,
                    RESPONSE_TOPIC => p.response_topic = p_str(v)?,
                    CORRELATION_DATA => p.correlation_data = p_bin(v)?,
                    _ => p_user(v, &mut p.user_properties)?,
                }
                Ok(())
            })?;
        }
        let topic = r.string()?;
        check_topic_name(&topic)?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            // will_qos is 0..=2 here.
            qos: QoS::from_u8(will_qos).unwrap_or_default(),
            retain: will_retain,
            properties: wp,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// Topic name rules on an already UTF-8 checked string.
#[inline(always)]
fn check_topic_name(topic: &str) -> Result<(), DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::TopicNameInvalid("empty topic name"));
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(DecodeError::TopicNameInvalid(
            "wildcard character in topic name",
        ));
    }
    Ok(())
}

fn decode_connack<S: Source>(
    r: &mut Reader<'_, S>,
    v: ProtocolVersion,
) -> Result<ConnAck, DecodeError> {
    let ack_flags = r.u8()?;
    if ack_flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags set"));
    }
    let session_present = ack_flags & 0x01 != 0;
    let raw = r.u8()?;
    let mut properties = ConnAckProperties::default();
    let code = if v.is_v5() {
        let code = reason(raw, CONNACK_CODES)?;
        let p = &mut properties;
        read_props(r, CONNACK_PROPS, USER_ONLY, |id, v| {
            match id {
                SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = p_u32(v)?,
                RECEIVE_MAXIMUM => p.receive_maximum = p_u16(v)?,
                MAXIMUM_QOS => p.maximum_qos = p_u8(v)?,
                RETAIN_AVAILABLE => p.retain_available = p_u8(v)?,
                MAXIMUM_PACKET_SIZE => p.maximum_packet_size = p_u32(v)?,
                ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = p_str(v)?,
                TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = p_u16(v)?,
                REASON_STRING => p.reason_string = p_str(v)?,
                WILDCARD_SUBSCRIPTION_AVAILABLE => p.wildcard_subscription_available = p_u8(v)?,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    p.subscription_identifiers_available = p_u8(v)?
                }
                SHARED_SUBSCRIPTION_AVAILABLE => p.shared_subscription_available = p_u8(v)?,
                SERVER_KEEP_ALIVE => p.server_keep_alive = p_u16(v)?,
                RESPONSE_INFORMATION => p.response_information = p_str(v)?,
                SERVER_REFERENCE => p.server_reference = p_str(v)?,
                AUTHENTICATION_METHOD => p.authentication_method = p_str(v)?,
                AUTHENTICATION_DATA => p.authentication_data = p_bin(v)?,
                _ => p_user(v, &mut p.user_properties)?,
            }
            Ok(())
        })?;
        code
    } else {
        if raw > 5 {
            return Err(DecodeError::Malformed("reserved CONNACK return code"));
        }
        ReasonCode::from_v311_connack(raw)
    };
    if session_present && code != ReasonCode::SUCCESS {
        return Err(DecodeError::Protocol(
            "CONNACK with Session Present and a failure code",
        ));
    }
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

/// The property block of a PUBLISH into `p`.
#[inline]
fn read_publish_props<S: Source>(
    r: &mut Reader<'_, S>,
    p: &mut PublishProperties,
) -> Result<(), DecodeError> {
    read_props(r, PUBLISH_PROPS, PUBLISH_MULTI, |id, v| {
        match id {
            PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = p_u8(v)?,
            MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = p_u32(v)?,
            TOPIC_ALIAS => p.topic_alias = p_u16(v)?,
            RESPONSE_TOPIC => p.response_topic = p_str(v)?,
            CORRELATION_DATA => p.correlation_data = p_bin(v)?,
            SUBSCRIPTION_IDENTIFIER => {
                if let Some(id) = p_u32(v)? {
                    p.subscription_identifiers.push(id);
                }
            }
            CONTENT_TYPE => p.content_type = p_str(v)?,
            _ => p_user(v, &mut p.user_properties)?,
        }
        Ok(())
    })
}

/// The QoS in a PUBLISH's fixed-header flags; QoS 3 was rejected by `check_first_byte`.
#[inline(always)]
fn publish_qos(flags: u8) -> QoS {
    match (flags >> 1) & 0x03 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Properties of a PUBLISH that may repeat.
const PUBLISH_MULTI: u64 = USER_ONLY | (1u64 << SUBSCRIPTION_IDENTIFIER);

#[inline(always)]
fn decode_publish<S: Source>(
    r: &mut Reader<'_, S>,
    flags: u8,
    v: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let dup = flags & 0x08 != 0;
    let retain = flags & 0x01 != 0;
    let qos = publish_qos(flags);
    let (ts, te) = r.prefixed()?;
    check_publish_topic_bytes(&r.buf[ts..te])?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let mut properties = PublishProperties::default();
    if v.is_v5() {
        read_publish_props(r, &mut properties)?;
        if ts == te && properties.topic_alias.is_none() {
            return Err(DecodeError::Protocol(
                "empty topic name without a Topic Alias",
            ));
        }
    } else if ts == te {
        return Err(DecodeError::TopicNameInvalid("empty topic name"));
    }
    let topic = r.src.string(ts, te)?;
    let payload = r.rest();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload,
        properties,
    })
}

// ---------------------------------------------------------------------------------------------
// PUBLISH in place
// ---------------------------------------------------------------------------------------------

/// A PUBLISH read in place: topic and payload borrow the receive buffer, and nothing is
/// allocated or reference counted. It has passed every check [`decode_packet`] makes; the
/// broker copies out of it only what it keeps (see `Connection::handle_publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishView<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Valid UTF-8 (checked by the decoder): see [`PublishView::topic`].
    topic: &'a [u8],
    /// 0 for QoS 0.
    pub packet_id: u16,
    pub payload: &'a [u8],
    /// The MQTT 5 properties the broker acts on, read in place.
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<u16>,
    other: OtherProps<'a>,
}

/// Where the remaining properties of a [`PublishView`] are, if it has any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OtherProps<'a> {
    None,
    /// The whole property block (its length included), already validated.
    Wire(&'a [u8]),
    Decoded(&'a PublishProperties),
}

impl<'a> PublishView<'a> {
    /// A view of an already decoded PUBLISH.
    pub fn of(p: &'a Publish) -> Self {
        let pr = &p.properties;
        let other = pr.response_topic.is_some()
            || pr.correlation_data.is_some()
            || !pr.user_properties.is_empty()
            || !pr.subscription_identifiers.is_empty()
            || pr.content_type.is_some();
        PublishView {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: p.topic.as_bytes(),
            packet_id: p.packet_id,
            payload: &p.payload,
            payload_format_indicator: pr.payload_format_indicator,
            message_expiry_interval: pr.message_expiry_interval,
            topic_alias: pr.topic_alias,
            other: if other {
                OtherProps::Decoded(pr)
            } else {
                OtherProps::None
            },
        }
    }

    /// The topic name's bytes; empty in MQTT 5 when `topic_alias` is set. They are valid
    /// UTF-8, so the broker compares them with topics it knows without converting.
    pub fn topic_bytes(&self) -> &'a [u8] {
        self.topic
    }

    /// The topic name. The decoder checked it is UTF-8 (an all-ASCII topic needs no more
    /// than the wildcard scan), so this conversion cannot fail; it is not free either, which
    /// is why the hot path uses [`PublishView::topic_bytes`].
    pub fn topic(&self) -> &'a str {
        std::str::from_utf8(self.topic).unwrap_or_default()
    }

    /// Whether it carries properties beyond the three read in place (Response Topic,
    /// Correlation Data, User Properties, Subscription Identifiers, Content Type).
    pub fn has_other_properties(&self) -> bool {
        self.other != OtherProps::None
    }

    /// All its properties, copied out. Cannot fail for a view from [`decode_publish_view`]
    /// (the block was checked then); the error is returned rather than assumed away.
    pub fn properties(&self) -> Result<PublishProperties, DecodeError> {
        let mut p = match self.other {
            OtherProps::None => PublishProperties::default(),
            OtherProps::Decoded(p) => p.clone(),
            OtherProps::Wire(block) => {
                let mut p = PublishProperties::default();
                let mut r = Reader {
                    src: SliceSrc(block),
                    buf: block,
                    pos: 0,
                    end: block.len(),
                };
                read_publish_props(&mut r, &mut p)?;
                p
            }
        };
        p.payload_format_indicator = self.payload_format_indicator;
        p.message_expiry_interval = self.message_expiry_interval;
        p.topic_alias = self.topic_alias;
        Ok(p)
    }

    /// The owned packet (topic and payload copied).
    pub fn to_publish(&self) -> Result<Publish, DecodeError> {
        Ok(Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: ByteString::from(self.topic()),
            packet_id: self.packet_id,
            payload: Bytes::copy_from_slice(self.payload),
            properties: self.properties()?,
        })
    }
}

/// Decodes one PUBLISH in place; the broker's receive path for its most frequent packet.
/// Same contract and same checks as [`decode_packet`] on a connection of version `version`,
/// but `buf` must start with a PUBLISH (first byte `0x3_`): anything else is an error, so the
/// caller looks at `buf[0] >> 4 == 3` first and uses [`decode_packet`] otherwise.
#[inline]
pub fn decode_publish_view(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<(PublishView<'_>, usize)>, DecodeError> {
    let Some(h) = frame(buf, Some(version), max_packet_size)? else {
        return Ok(None);
    };
    if h.first_byte >> 4 != T_PUBLISH {
        return Err(DecodeError::Malformed("not a PUBLISH"));
    }
    let total = h.packet_len();
    let mut r = Reader {
        src: CheckSrc(buf),
        buf,
        pos: h.header_len,
        end: total,
    };
    let flags = h.first_byte & 0x0F;
    let qos = publish_qos(flags);
    let (ts, te) = r.prefixed()?;
    let ascii = check_publish_topic_bytes(&buf[ts..te])?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let mut pfi = None;
    let mut expiry = None;
    let mut alias = None;
    let mut other = OtherProps::None;
    if version.is_v5() {
        let start = r.pos;
        let mut more = false;
        if r.pos < r.end && buf[r.pos] == 0 {
            // No properties, the common case: a property length of 0.
            r.pos += 1;
        } else {
            read_props(&mut r, PUBLISH_PROPS, PUBLISH_MULTI, |id, v| {
                match id {
                    PAYLOAD_FORMAT_INDICATOR => pfi = p_u8(v)?,
                    MESSAGE_EXPIRY_INTERVAL => expiry = p_u32(v)?,
                    TOPIC_ALIAS => alias = p_u16(v)?,
                    _ => more = true,
                }
                Ok(())
            })?;
        }
        if more {
            other = OtherProps::Wire(&buf[start..r.pos]);
        }
        if ts == te && alias.is_none() {
            return Err(DecodeError::Protocol(
                "empty topic name without a Topic Alias",
            ));
        }
    } else if ts == te {
        return Err(DecodeError::TopicNameInvalid("empty topic name"));
    }
    let topic = &buf[ts..te];
    if !ascii && std::str::from_utf8(topic).is_err() {
        return Err(DecodeError::Malformed("invalid UTF-8 string"));
    }
    Ok(Some((
        PublishView {
            dup: flags & 0x08 != 0,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            payload: &buf[r.pos..total],
            payload_format_indicator: pfi,
            message_expiry_interval: expiry,
            topic_alias: alias,
            other,
        },
        total,
    )))
}

/// U+0000 and wildcards in a PUBLISH topic name. The common case (none of them) is checked
/// eight bytes at a time; the byte loop only runs to report the first offending byte.
#[inline(always)]
/// Returns whether the topic is all ASCII (then it is valid UTF-8 without further checks).
fn check_publish_topic_bytes(topic: &[u8]) -> Result<bool, DecodeError> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    /// Non-zero iff some byte of `x` is zero (exact for "any", SWAR).
    #[inline(always)]
    fn zero_byte(x: u64) -> u64 {
        x.wrapping_sub(LO) & !x & HI
    }
    #[inline(always)]
    fn bad(w: u64) -> u64 {
        zero_byte(w) | zero_byte(w ^ (LO * b'+' as u64)) | zero_byte(w ^ (LO * b'#' as u64))
    }
    let mut chunks = topic.chunks_exact(8);
    let mut found = 0u64;
    let mut bits = 0u64;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        found |= bad(w);
        bits |= w;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() && topic.len() >= 8 {
        // The last eight bytes: the overlap is checked twice, which changes nothing.
        let mut w = [0u8; 8];
        w.copy_from_slice(&topic[topic.len() - 8..]);
        let w = u64::from_le_bytes(w);
        found |= bad(w);
        bits |= w;
    } else if !tail.is_empty() {
        // Pad with a byte that is none of 0, '+', '#' (and is ASCII).
        let mut w = [b'a'; 8];
        w[..tail.len()].copy_from_slice(tail);
        let w = u64::from_le_bytes(w);
        found |= bad(w);
        bits |= w;
    }
    let ascii = bits & HI == 0;
    if found == 0 {
        return Ok(ascii);
    }
    for &b in topic {
        if b == b'+' || b == b'#' {
            return Err(DecodeError::TopicNameInvalid(
                "wildcard character in topic name",
            ));
        }
        if b == 0 {
            return Err(DecodeError::Malformed("U+0000 in a UTF-8 string"));
        }
    }
    Ok(ascii)
}

#[inline]
fn decode_pub_resp<S: Source>(
    r: &mut Reader<'_, S>,
    v: ProtocolVersion,
    codes: &[u8],
) -> Result<PubResp, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut resp = PubResp::new(packet_id);
    if v.is_v5() && r.remaining() > 0 {
        resp.reason = reason(r.u8()?, codes)?;
        if r.remaining() > 0 {
            resp.properties = read_ack_props(r)?;
        }
    }
    Ok(resp)
}

fn decode_subscribe<S: Source>(
    r: &mut Reader<'_, S>,
    v: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut properties = SubscribeProperties::default();
    if v.is_v5() {
        let p = &mut properties;
        read_props(r, SUBSCRIBE_PROPS, USER_ONLY, |id, v| {
            match id {
                SUBSCRIPTION_IDENTIFIER => p.subscription_identifier = p_u32(v)?,
                _ => p_user(v, &mut p.user_properties)?,
            }
            Ok(())
        })?;
    }
    if r.remaining() == 0 {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string()?;
        let o = r.u8()?;
        let options = if v.is_v5() {
            if o & 0xC0 != 0 {
                return Err(DecodeError::Malformed(
                    "reserved bits set in subscription options",
                ));
            }
            let Some(qos) = QoS::from_u8(o & 0x03) else {
                return Err(DecodeError::Protocol("subscription with QoS 3"));
            };
            let retain_handling = (o >> 4) & 0x03;
            if retain_handling == 3 {
                return Err(DecodeError::Protocol("Retain Handling 3"));
            }
            SubscriptionOptions {
                qos,
                no_local: o & 0x04 != 0,
                retain_as_published: o & 0x08 != 0,
                retain_handling,
            }
        } else {
            if o & 0xFC != 0 {
                return Err(DecodeError::Malformed(
                    "reserved bits set in requested QoS byte",
                ));
            }
            let Some(qos) = QoS::from_u8(o) else {
                return Err(DecodeError::Malformed("subscription with QoS 3"));
            };
            SubscriptionOptions {
                qos,
                ..Default::default()
            }
        };
        // Filter validity (`a/#/b`, `a+`, empty, `$share` syntax) is the session's decision: a
        // well-formed but invalid filter gets its own SUBACK 0x8F (MQTT 5 section 3.8.3).
        if options.no_local && parse_shared(&filter).is_some() {
            return Err(DecodeError::Protocol("No Local on a shared subscription"));
        }
        filters.push((filter, options));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_suback<S: Source>(
    r: &mut Reader<'_, S>,
    v: ProtocolVersion,
) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v.is_v5() {
        read_ack_props(r)?
    } else {
        AckProperties::default()
    };
    if r.remaining() == 0 {
        return Err(DecodeError::Protocol("SUBACK without reason codes"));
    }
    let codes: &[u8] = if v.is_v5() {
        SUBACK_CODES
    } else {
        &[0x00, 0x01, 0x02, 0x80]
    };
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        reasons.push(reason(r.u8()?, codes)?);
    }
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_unsubscribe<S: Source>(
    r: &mut Reader<'_, S>,
    v: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut user_properties = UserProperties::new();
    if v.is_v5() {
        read_props(r, UNSUBSCRIBE_PROPS, USER_ONLY, |_, p| {
            p_user(p, &mut user_properties)
        })?;
    }
    if r.remaining() == 0 {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        // Filter validity is the session's decision (UNSUBACK 0x8F for that filter).
        filters.push(r.string()?);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    })
}

fn decode_unsuback<S: Source>(
    r: &mut Reader<'_, S>,
    v: ProtocolVersion,
) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    if !v.is_v5() {
        return Ok(UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: AckProperties::default(),
        });
    }
    let properties = read_ack_props(r)?;
    if r.remaining() == 0 {
        return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
    }
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        reasons.push(reason(r.u8()?, UNSUBACK_CODES)?);
    }
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_disconnect<S: Source>(
    r: &mut Reader<'_, S>,
    v: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    if !v.is_v5() || r.remaining() == 0 {
        return Ok(d);
    }
    d.reason = reason(r.u8()?, DISCONNECT_CODES)?;
    if r.remaining() > 0 {
        let p = &mut d.properties;
        read_props(r, DISCONNECT_PROPS, USER_ONLY, |id, v| {
            match id {
                SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = p_u32(v)?,
                REASON_STRING => p.reason_string = p_str(v)?,
                SERVER_REFERENCE => p.server_reference = p_str(v)?,
                _ => p_user(v, &mut p.user_properties)?,
            }
            Ok(())
        })?;
    }
    Ok(d)
}

fn decode_auth<S: Source>(r: &mut Reader<'_, S>) -> Result<Auth, DecodeError> {
    let mut a = Auth {
        reason: ReasonCode::SUCCESS,
        properties: AuthProperties::default(),
    };
    if r.remaining() == 0 {
        return Ok(a);
    }
    a.reason = reason(r.u8()?, AUTH_CODES)?;
    if r.remaining() > 0 {
        let p = &mut a.properties;
        read_props(r, AUTH_PROPS, USER_ONLY, |id, v| {
            match id {
                AUTHENTICATION_METHOD => p.authentication_method = p_str(v)?,
                AUTHENTICATION_DATA => p.authentication_data = p_bin(v)?,
                REASON_STRING => p.reason_string = p_str(v)?,
                _ => p_user(v, &mut p.user_properties)?,
            }
            Ok(())
        })?;
    }
    Ok(a)
}
