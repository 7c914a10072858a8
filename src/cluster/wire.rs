//! The peer link's frames: `len: u32 LE | kind: u8 | body`, sans-IO (encode into a buffer,
//! decode from the front of one). Field encodings are the storage log's (`session::journal`):
//! little-endian integers, `u32 length | bytes` strings, wall-clock milliseconds for times.
//!
//! Sequenced frames (`Publish`, `TakeOver`, `Handoff`, `Stored`) carry the sender's sequence number: the
//! receiver acknowledges them cumulatively (`Ack`), the sender keeps what is not acknowledged
//! and sends it again on the next connection, and the receiver drops a number it has seen
//! (per sender incarnation, from `Hello`). `Filters`, `Filter` and `Retained` describe the
//! sender's current state and are sent again in full on every new connection instead.

use bytestring::ByteString;

use crate::session::journal::{put_bytes, put_message, put_opt, put_opt_str, put_u64, put_u8};
use crate::session::Message;
use crate::storage::record::{Bad, Rd};

/// A frame above this is damage (a session image, the largest frame, stays far below it).
pub const MAX_FRAME: usize = 256 << 20;

const HELLO: u8 = 1;
const FILTERS: u8 = 2;
const FILTER: u8 = 3;
const PUBLISH: u8 = 4;
const ACK: u8 = 5;
const TAKEOVER: u8 = 6;
const HANDOFF: u8 = 7;
const RETAINED: u8 = 8;
const PING: u8 = 9;
const STORED: u8 = 10;

#[derive(Debug, Clone)]
pub enum Frame {
    /// First frame of a connection: who sends, and which run of it (a restarted node has a
    /// new incarnation and numbers its frames from 1 again).
    Hello { node: String, incarnation: u64 },
    /// The sender's whole set of subscribed (non-shared) filters, replacing what the receiver
    /// knew of it.
    Filters(Vec<ByteString>),
    /// One filter of the sender gained its first (`add`) or lost its last subscriber.
    Filter { filter: ByteString, add: bool },
    /// A message published on the sender. `route`: deliver to the receiver's matching
    /// (non-shared) subscriptions (false: not for them: a retained message for the receiver's
    /// store, or only for `groups`). `groups`: the shared subscriptions (`$share/G/F`) the
    /// sender picked the receiver for: it delivers to one of its members of each.
    Publish {
        seq: u64,
        route: bool,
        groups: Vec<ByteString>,
        msg: Message,
    },
    /// Every sequenced frame up to `seq` was handled.
    Ack { seq: u64 },
    /// The sender claimed `client_id` in etcd, and the receiver held it before: close its
    /// connection, and answer `Handoff` with `token`.
    TakeOver {
        seq: u64,
        token: u64,
        client_id: ByteString,
        clean_start: bool,
        username: Option<ByteString>,
    },
    /// The answer to a `TakeOver`.
    Handoff {
        seq: u64,
        token: u64,
        outcome: Outcome,
    },
    /// A retained message of the sender's store, for a receiver that has none on its topic
    /// (sent when a link comes up).
    Retained(Message),
    /// The receiver's `TakeOver` `token` brought a session that the sender has now stored
    /// (or let end): the receiver's durable copy of it may go.
    Stored { seq: u64, token: u64 },
    /// Liveness: sent on an otherwise idle link; the receiver answers with an `Ack`, so each
    /// side hears from the other at least every heartbeat while the link works.
    Ping,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// No session continues (none was held, or it ended with the take-over).
    None,
    /// The session continues: its image (`storage::record::session_bytes`), and a will
    /// waiting for its delay (with when it is due) that travels with it.
    Session {
        image: Vec<u8>,
        will: Option<(Message, std::time::Instant)>,
    },
    /// Refused by policy (`refuse_takeover_by_other_user`): CONNACK "not authorized".
    Refused,
}

impl Frame {
    /// Its sequence number, if it is a sequenced frame.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Frame::Publish { seq, .. }
            | Frame::TakeOver { seq, .. }
            | Frame::Handoff { seq, .. }
            | Frame::Stored { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// Its sequence number to set, if it is a sequenced frame.
    pub fn seq_mut(&mut self) -> Option<&mut u64> {
        match self {
            Frame::Publish { seq, .. }
            | Frame::TakeOver { seq, .. }
            | Frame::Handoff { seq, .. }
            | Frame::Stored { seq, .. } => Some(seq),
            _ => None,
        }
    }
}

/// Append `f` to `out`.
pub fn encode(f: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match f {
        Frame::Hello { node, incarnation } => {
            put_u8(out, HELLO);
            put_bytes(out, node.as_bytes());
            put_u64(out, *incarnation);
        }
        Frame::Filters(list) => {
            put_u8(out, FILTERS);
            put_strings(out, list);
        }
        Frame::Filter { filter, add } => {
            put_u8(out, FILTER);
            put_u8(out, *add as u8);
            put_bytes(out, filter.as_bytes());
        }
        Frame::Publish {
            seq,
            route,
            groups,
            msg,
        } => {
            put_u8(out, PUBLISH);
            put_u64(out, *seq);
            put_u8(out, *route as u8);
            put_strings(out, groups);
            put_message(out, msg);
        }
        Frame::Ack { seq } => {
            put_u8(out, ACK);
            put_u64(out, *seq);
        }
        Frame::TakeOver {
            seq,
            token,
            client_id,
            clean_start,
            username,
        } => {
            put_u8(out, TAKEOVER);
            put_u64(out, *seq);
            put_u64(out, *token);
            put_bytes(out, client_id.as_bytes());
            put_u8(out, *clean_start as u8);
            put_opt_str(out, username.as_ref());
        }
        Frame::Handoff {
            seq,
            token,
            outcome,
        } => {
            put_u8(out, HANDOFF);
            put_u64(out, *seq);
            put_u64(out, *token);
            match outcome {
                Outcome::None => put_u8(out, 0),
                Outcome::Session { image, will } => {
                    put_u8(out, 1);
                    put_bytes(out, image);
                    put_opt(out, will.as_ref(), |o, (m, due)| {
                        put_message(o, m);
                        put_u64(o, crate::storage::clock::wall_ms(*due));
                    });
                }
                Outcome::Refused => put_u8(out, 2),
            }
        }
        Frame::Retained(m) => {
            put_u8(out, RETAINED);
            put_message(out, m);
        }
        Frame::Ping => put_u8(out, PING),
        Frame::Stored { seq, token } => {
            put_u8(out, STORED);
            put_u64(out, *seq);
            put_u64(out, *token);
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// A list of strings: `u32 count | (u32 length | bytes)...`.
fn put_strings(out: &mut Vec<u8>, list: &[ByteString]) {
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for f in list {
        put_bytes(out, f.as_bytes());
    }
}

/// A list of strings in a frame of `len` bytes (a count above that is damage).
fn strings(r: &mut Rd<'_>, len: usize) -> Result<Vec<ByteString>, Bad> {
    let n = r.u32()? as usize;
    if n > len {
        return Err(Bad);
    }
    let mut list = Vec::with_capacity(n);
    for _ in 0..n {
        list.push(r.string()?);
    }
    Ok(list)
}

/// The frame at the front of `buf` and the bytes it took; `Ok(None)` when `buf` holds only
/// part of it. `Err`: a frame that does not parse or is larger than [`MAX_FRAME`] (the link
/// is then closed).
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, Bad> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(Bad);
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let mut r = Rd::new(&buf[4..4 + len]);
    let f = match r.u8()? {
        HELLO => {
            let node = r.string()?.to_string();
            Frame::Hello {
                node,
                incarnation: r.u64()?,
            }
        }
        FILTERS => Frame::Filters(strings(&mut r, len)?),
        FILTER => {
            let add = r.u8()? != 0;
            Frame::Filter {
                filter: r.string()?,
                add,
            }
        }
        PUBLISH => {
            let seq = r.u64()?;
            let route = r.u8()? != 0;
            let groups = strings(&mut r, len)?;
            Frame::Publish {
                seq,
                route,
                groups,
                msg: r.message()?,
            }
        }
        ACK => Frame::Ack { seq: r.u64()? },
        TAKEOVER => Frame::TakeOver {
            seq: r.u64()?,
            token: r.u64()?,
            client_id: r.string()?,
            clean_start: r.u8()? != 0,
            username: r.opt_str()?,
        },
        HANDOFF => {
            let seq = r.u64()?;
            let token = r.u64()?;
            let outcome = match r.u8()? {
                0 => Outcome::None,
                1 => {
                    let image = r.bytes()?.to_vec();
                    let will = r.opt(|r| {
                        let m = r.message()?;
                        Ok((m, crate::storage::clock::instant_of(r.u64()?)))
                    })?;
                    Outcome::Session { image, will }
                }
                2 => Outcome::Refused,
                _ => return Err(Bad),
            };
            Frame::Handoff {
                seq,
                token,
                outcome,
            }
        }
        RETAINED => Frame::Retained(r.message()?),
        PING => Frame::Ping,
        STORED => Frame::Stored {
            seq: r.u64()?,
            token: r.u64()?,
        },
        _ => return Err(Bad),
    };
    if !r.is_empty() {
        return Err(Bad);
    }
    Ok(Some((f, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use crate::session::MessageData;

    fn msg(topic: &str, payload: &str, qos: QoS) -> Message {
        Message::new(MessageData {
            topic: ByteString::from(topic),
            payload: bytes::Bytes::from(payload.to_string()),
            qos,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: Some(ByteString::from("pub")),
        })
    }

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let frames = vec![
            Frame::Hello {
                node: "n1".into(),
                incarnation: 7,
            },
            Frame::Filters(vec!["a/#".into(), "b/+/c".into()]),
            Frame::Filter {
                filter: "x".into(),
                add: false,
            },
            Frame::Publish {
                seq: 3,
                route: true,
                groups: vec!["$share/g/a/#".into(), "$share/h/a/b".into()],
                msg: msg("a/b", "hello", QoS::AtLeastOnce),
            },
            Frame::Ack { seq: 99 },
            Frame::TakeOver {
                seq: 4,
                token: 11,
                client_id: "c1".into(),
                clean_start: false,
                username: Some("u".into()),
            },
            Frame::Handoff {
                seq: 5,
                token: 11,
                outcome: Outcome::Session {
                    image: vec![1, 2, 3],
                    will: Some((msg("w", "bye", QoS::AtMostOnce), std::time::Instant::now())),
                },
            },
            Frame::Handoff {
                seq: 6,
                token: 12,
                outcome: Outcome::Refused,
            },
            Frame::Retained(msg("r", "kept", QoS::ExactlyOnce)),
            Frame::Ping,
            Frame::Stored { seq: 7, token: 13 },
        ];
        let mut buf = Vec::new();
        for f in &frames {
            encode(f, &mut buf);
        }
        // Every prefix is "need more", never an error or a wrong frame.
        let first_len = 4 + u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        for cut in 0..first_len {
            assert!(matches!(decode(&buf[..cut]), Ok(None)), "cut {cut}");
        }
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((f, n)) = decode(&buf[at..]).unwrap() {
            out.push(f);
            at += n;
        }
        assert_eq!(at, buf.len());
        assert_eq!(out.len(), frames.len());
        for (a, b) in frames.iter().zip(&out) {
            // Decoded, each encodes to the same bytes again.
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            encode(a, &mut ea);
            encode(b, &mut eb);
            assert_eq!(ea, eb, "{a:?}");
            assert_eq!(a.seq(), b.seq());
        }
        match &out[3] {
            Frame::Publish {
                msg, route, groups, ..
            } => {
                assert!(route);
                assert_eq!(groups, &["$share/g/a/#", "$share/h/a/b"]);
                assert_eq!(&*msg.topic, "a/b");
                assert_eq!(&msg.payload[..], b"hello");
                assert_eq!(msg.qos, QoS::AtLeastOnce);
                assert_eq!(msg.publisher.as_deref(), Some("pub"));
            }
            f => panic!("{f:?}"),
        }
        match &out[5] {
            Frame::TakeOver {
                client_id,
                username,
                clean_start,
                token,
                ..
            } => {
                assert_eq!(&**client_id, "c1");
                assert_eq!(username.as_deref(), Some("u"));
                assert!(!clean_start);
                assert_eq!(*token, 11);
            }
            f => panic!("{f:?}"),
        }
        match &out[6] {
            Frame::Handoff {
                outcome: Outcome::Session { image, will },
                ..
            } => {
                assert_eq!(image, &vec![1, 2, 3]);
                assert_eq!(&*will.as_ref().unwrap().0.topic, "w");
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        // Oversized length, zero length, unknown kind, trailing bytes.
        assert!(decode(&u32::MAX.to_le_bytes()).is_err());
        assert!(decode(&[0, 0, 0, 0, 1]).is_err());
        assert!(decode(&[1, 0, 0, 0, 200]).is_err());
        let mut buf = Vec::new();
        encode(&Frame::Ack { seq: 1 }, &mut buf);
        buf[0] += 1;
        buf.push(0);
        assert!(decode(&buf).is_err());
        // Every truncation of a body inside a valid length is an error.
        let mut buf = Vec::new();
        encode(
            &Frame::Publish {
                seq: 1,
                route: true,
                groups: vec!["$share/g/t".into()],
                msg: msg("t", "p", QoS::AtMostOnce),
            },
            &mut buf,
        );
        for cut in 6..buf.len() {
            let mut b = buf[..cut].to_vec();
            let len = (cut - 4) as u32;
            b[..4].copy_from_slice(&len.to_le_bytes());
            assert!(decode(&b).is_err(), "cut {cut}");
        }
    }
}
