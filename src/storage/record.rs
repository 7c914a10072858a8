//! The on-disk records of the log and the snapshots, and their codec.
//!
//! # Framing
//! Every record is a frame: `len: u32 LE | crc32(body): u32 LE | body[len]`. Logs and
//! snapshots are sequences of frames; a snapshot ends with an `END` frame, so a snapshot
//! without one is incomplete (never renamed into place, or damaged).
//!
//! # Bodies
//! - `SESSION`: `client_id, epoch, sub-records...`: the changes of one durable copy of a
//!   session, the copy that worker holds under ownership `epoch` (see `recover.rs` for how
//!   copies of one client id on different workers are resolved).
//! - `RETAIN`: `version, topic, message?` (none: deleted). `version` is broker-wide and
//!   increases with every change of the retained store.
//! - `RETAINED_IMAGE`: `version` (the snapshot holds the whole retained store as of it,
//!   followed by one `RETAIN` frame per message).
//! - `END`: the snapshot is complete.
//! - `FANOUT`: `seq, client_id, packet_id, workers, groups, message`: a QoS 2 PUBLISH of a
//!   durable session that this worker routed and that goes on to the other `workers` (`u16`
//!   each; part 0) and to shared-subscription members picked on other workers (`groups`:
//!   `worker u16, $share/G/F`; part i + 1 for the i-th); logged in one batch with this
//!   worker's copies and, last, the packet id's `IN2`. `FANOUT_DONE`: `seq`: every part
//!   answered that its copies are on disk. `ROUTED`: `origin, seq, part`: this worker did
//!   that part of worker `origin`'s fan-out `seq`, in one batch with the copies it made.
//!   Recovery does every part of a fan-out without `FANOUT_DONE` that has no `ROUTED`
//!   (`recover.rs`, `broker/persist.rs`).
//!
//! Sub-records of a `SESSION` body (`kind: u8`, then its fields):
//! `IMAGE` (the whole session), `DROP` (this copy is gone: ended, expired or handed on),
//! `SUB`, `UNSUB`, `QUEUE` (message appended to the queue), `POP` (queue front removed),
//! `INFLIGHT` (a PUBLISH in flight with its packet id), `RELEASED` (PUBREC received, PUBREL
//! state), `DONE` (delivery over), `IN2` / `IN2_DONE` (inbound QoS 2 id held / released),
//! `OFFLINE` (connection ended: expiry deadline and delayed will), `EXPIRY` (new Session
//! Expiry Interval from DISCONNECT).
//!
//! Times are wall-clock milliseconds since the Unix epoch (`clock`), so deadlines survive a
//! restart. Strings and byte strings are `u32 length | bytes`; options are `u8 tag | value`.

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{Publish, PublishProperties, QoS, Will, WillProperties};
pub use crate::session::journal::*;
use crate::session::state::{Inflight, InflightState, Queued};
use crate::session::{Message, MessageData, Session, Subscription};

use super::clock;

pub const SESSION: u8 = 1;
pub const RETAIN: u8 = 2;
pub const RETAINED_IMAGE: u8 = 3;
pub const END: u8 = 4;
pub const FANOUT: u8 = 5;
pub const FANOUT_DONE: u8 = 6;
pub const ROUTED: u8 = 7;

/// Frame header bytes.
pub const HEADER: usize = 8;
/// Largest body accepted when reading (a length beyond it is damage, not a record).
pub const MAX_BODY: usize = 1 << 30;

// --- writing -----------------------------------------------------------------------------

/// Start a frame in `out`; returns its start for [`end_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    start
}

/// Fill in the length and CRC of the frame begun at `start`.
pub fn end_frame(out: &mut [u8], start: usize) {
    let body = &out[start + HEADER..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A `SESSION` frame for `client_id`/`epoch` holding the already encoded sub-records `subs`.
pub fn session_frame(out: &mut Vec<u8>, client_id: &str, epoch: u64, subs: &[u8]) {
    let f = begin_frame(out);
    put_u8(out, SESSION);
    put_bytes(out, client_id.as_bytes());
    put_u64(out, epoch);
    out.extend_from_slice(subs);
    end_frame(out, f);
}

pub fn retain_frame(out: &mut Vec<u8>, version: u64, topic: &str, msg: Option<&Message>) {
    let f = begin_frame(out);
    put_u8(out, RETAIN);
    put_u64(out, version);
    put_bytes(out, topic.as_bytes());
    put_opt(out, msg, put_message);
    end_frame(out, f);
}

/// A `FANOUT` frame (see the module header).
pub fn fanout_frame(out: &mut Vec<u8>, f: &Fanout) {
    let start = begin_frame(out);
    put_u8(out, FANOUT);
    put_u64(out, f.seq);
    put_bytes(out, f.client_id.as_bytes());
    put_u16(out, f.packet_id);
    put_u32(out, f.workers.len() as u32);
    for &w in &f.workers {
        put_u16(out, w);
    }
    put_u32(out, f.groups.len() as u32);
    for (w, group) in &f.groups {
        put_u16(out, *w);
        put_bytes(out, group.as_bytes());
    }
    put_message(out, &f.msg);
    end_frame(out, start);
}

/// A `ROUTED` frame: this worker's copies of part `part` of worker `origin`'s fan-out `seq`.
pub fn routed_frame(out: &mut Vec<u8>, origin: u16, seq: u64, part: u32) {
    let start = begin_frame(out);
    put_u8(out, ROUTED);
    put_u16(out, origin);
    put_u64(out, seq);
    put_u32(out, part);
    end_frame(out, start);
}

/// A QoS 2 message routed from one worker to others (`FANOUT`).
#[derive(Debug, Clone)]
pub struct Fanout {
    pub seq: u64,
    /// The publisher's session and the packet id it sent the message with.
    pub client_id: ByteString,
    pub packet_id: u16,
    /// The other workers it was posted to.
    pub workers: Vec<u16>,
    /// The shared subscriptions (`$share/G/F`) whose member picked on another worker it was
    /// posted to.
    pub groups: Vec<(u16, ByteString)>,
    pub msg: Message,
}

/// The body of a `FANOUT` frame after its kind byte.
pub fn read_fanout(r: &mut Rd<'_>) -> Result<Fanout, Bad> {
    let seq = r.u64()?;
    let client_id = r.string()?;
    let packet_id = r.u16()?;
    let n = r.count()?;
    let workers = (0..n).map(|_| r.u16()).collect::<Result<Vec<_>, _>>()?;
    let n = r.count()?;
    let groups = (0..n)
        .map(|_| Ok((r.u16()?, r.string()?)))
        .collect::<Result<Vec<_>, _>>()?;
    let msg = r.message()?;
    Ok(Fanout {
        seq,
        client_id,
        packet_id,
        workers,
        groups,
        msg,
    })
}

pub fn marker_frame(out: &mut Vec<u8>, kind: u8, version: u64) {
    let f = begin_frame(out);
    put_u8(out, kind);
    put_u64(out, version);
    end_frame(out, f);
}

/// The whole session (what a CONNECT accepted, a hand-off brought, or a snapshot holds).
pub fn put_image(out: &mut Vec<u8>, s: &Session, username: Option<&ByteString>) {
    put_u8(out, IMAGE);
    put_opt_str(out, username);
    put_u8(out, s.version.level());
    put_u32(out, s.session_expiry);
    put_opt(out, s.will.as_deref(), put_will);
    put_u16(out, s.next_packet_id);
    let x = s.extra();
    put_u64(out, x.next_seq);
    put_u32(out, s.subscriptions.len() as u32);
    for (f, sub) in s.subscriptions.iter() {
        put_sub(out, f, &sub.options, sub.subscription_id);
    }
    put_u32(out, x.inflight.len() as u32);
    for (&id, e) in x.inflight.iter() {
        put_inflight_of(out, id, e);
    }
    put_u32(out, x.queue.len() as u32);
    for q in x.queue.iter() {
        put_queued_of(out, q);
    }
    put_u32(out, x.inbound_qos2.len() as u32);
    for &id in x.inbound_qos2.iter() {
        put_u16(out, id);
    }
}

/// `put_inflight` of an in-flight entry.
pub(crate) fn put_inflight_of(out: &mut Vec<u8>, id: u16, e: &Inflight) {
    let p = match &e.state {
        InflightState::Qos1(p) | InflightState::Qos2(p) => Some(p),
        InflightState::Released => None,
    };
    put_inflight(out, id, e.seq, e.expires_at, p);
}

/// `put_queued` of a queue entry.
pub(crate) fn put_queued_of(out: &mut Vec<u8>, q: &Queued) {
    put_queued(out, q.qos, q.retain, &q.subscription_ids, &q.msg);
}

// --- reading -----------------------------------------------------------------------------

/// A body that does not parse (after its CRC matched: a bug or an incompatible file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad;

/// What one frame at the front of `buf` is.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete frame with a matching CRC, and the bytes it takes.
    Ok(&'a [u8], usize),
    /// The buffer ends inside the frame (a torn last write, or simply the end).
    Short,
    /// Length beyond the limit or CRC mismatch.
    Damaged,
}

pub fn read_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < HEADER {
        return Frame::Short;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len > MAX_BODY {
        return Frame::Damaged;
    }
    if buf.len() < HEADER + len {
        return Frame::Short;
    }
    let body = &buf[HEADER..HEADER + len];
    if crc32fast::hash(body) != crc {
        return Frame::Damaged;
    }
    Frame::Ok(body, HEADER + len)
}

/// A reader over one body.
pub struct Rd<'a> {
    buf: &'a [u8],
}

impl<'a> Rd<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Rd { buf }
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn remaining(&self) -> usize {
        self.buf.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if self.buf.len() < n {
            return Err(Bad);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, Bad> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub fn u32(&mut self) -> Result<u32, Bad> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64, Bad> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], Bad> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> Result<ByteString, Bad> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(ByteString::from)
            .map_err(|_| Bad)
    }
    pub fn opt<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, Bad>,
    ) -> Result<Option<T>, Bad> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(Bad),
        }
    }
    pub fn opt_str(&mut self) -> Result<Option<ByteString>, Bad> {
        self.opt(|r| r.string())
    }
    pub fn opt_time(&mut self) -> Result<Option<std::time::Instant>, Bad> {
        self.opt(|r| r.u64().map(clock::instant_of))
    }
    fn qos(&mut self) -> Result<QoS, Bad> {
        QoS::from_u8(self.u8()?).ok_or(Bad)
    }
    fn bool(&mut self) -> Result<bool, Bad> {
        Ok(self.u8()? != 0)
    }
    fn count(&mut self) -> Result<usize, Bad> {
        let n = self.u32()? as usize;
        // Every element takes at least one byte: a count beyond the rest is damage.
        if n > self.buf.len() {
            return Err(Bad);
        }
        Ok(n)
    }
    /// A counted list of u32 (subscription identifiers).
    fn ids(&mut self) -> Result<Vec<u32>, Bad> {
        let n = self.count()?;
        (0..n).map(|_| self.u32()).collect()
    }
    /// A counted list of (name, value) strings.
    fn user_properties(&mut self) -> Result<Vec<(ByteString, ByteString)>, Bad> {
        let n = self.count()?;
        (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }
    fn props(&mut self) -> Result<PublishProperties, Bad> {
        let payload_format_indicator = self.opt(|r| r.u8())?;
        let message_expiry_interval = self.opt(|r| r.u32())?;
        let response_topic = self.opt_str()?;
        let correlation_data = self.opt(|r| r.bytes().map(Bytes::copy_from_slice))?;
        let user_properties = self.user_properties()?;
        let subscription_identifiers = self.ids()?;
        let content_type = self.opt_str()?;
        Ok(PublishProperties {
            payload_format_indicator,
            message_expiry_interval,
            topic_alias: None,
            response_topic,
            correlation_data,
            user_properties,
            subscription_identifiers,
            content_type,
        })
    }
    pub fn message(&mut self) -> Result<Message, Bad> {
        let topic = self.string()?;
        let payload = Bytes::copy_from_slice(self.bytes()?);
        let qos = self.qos()?;
        let retain = self.bool()?;
        let properties = self.props()?;
        let expires_at = self.opt_time()?;
        let publisher = self.opt_str()?;
        Ok(Message::new(MessageData {
            topic,
            payload,
            qos,
            retain,
            properties,
            expires_at,
            publisher,
        }))
    }
    fn publish(&mut self, packet_id: u16) -> Result<Publish, Bad> {
        let qos = self.qos()?;
        let retain = self.bool()?;
        let topic = self.string()?;
        let payload = Bytes::copy_from_slice(self.bytes()?);
        let properties = self.props()?;
        Ok(Publish {
            dup: true,
            qos,
            retain,
            topic,
            packet_id,
            payload,
            properties,
        })
    }
    fn will(&mut self) -> Result<Will, Bad> {
        let topic = self.string()?;
        let payload = Bytes::copy_from_slice(self.bytes()?);
        let qos = self.qos()?;
        let retain = self.bool()?;
        let will_delay_interval = self.opt(|r| r.u32())?;
        let payload_format_indicator = self.opt(|r| r.u8())?;
        let message_expiry_interval = self.opt(|r| r.u32())?;
        let content_type = self.opt_str()?;
        let response_topic = self.opt_str()?;
        let correlation_data = self.opt(|r| r.bytes().map(Bytes::copy_from_slice))?;
        let user_properties = self.user_properties()?;
        Ok(Will {
            topic,
            payload,
            qos,
            retain,
            properties: WillProperties {
                will_delay_interval,
                payload_format_indicator,
                message_expiry_interval,
                content_type,
                response_topic,
                correlation_data,
                user_properties,
            },
        })
    }
    fn sub(&mut self) -> Result<(ByteString, Subscription), Bad> {
        let filter = self.string()?;
        let options = options_of(self.u8()?).ok_or(Bad)?;
        let subscription_id = self.opt(|r| r.u32())?;
        Ok((
            filter,
            Subscription {
                options,
                subscription_id,
            },
        ))
    }
    fn queued(&mut self) -> Result<Queued, Bad> {
        let qos = self.qos()?;
        let retain = self.bool()?;
        let subscription_ids = self.ids()?;
        let msg = self.message()?;
        Ok(Queued {
            msg,
            qos,
            retain,
            subscription_ids,
        })
    }
    fn inflight(&mut self) -> Result<(u16, Inflight), Bad> {
        let id = self.u16()?;
        let seq = self.u64()?;
        let expires_at = self.opt_time()?;
        let state = match self.u8()? {
            0 => {
                let p = self.publish(id)?;
                match p.qos {
                    QoS::AtLeastOnce => InflightState::Qos1(p),
                    QoS::ExactlyOnce => InflightState::Qos2(p),
                    QoS::AtMostOnce => return Err(Bad),
                }
            }
            1 => InflightState::Released,
            _ => return Err(Bad),
        };
        Ok((
            id,
            Inflight {
                seq,
                state,
                expires_at,
            },
        ))
    }
}

/// A session as rebuilt from its records.
#[derive(Debug, Clone)]
pub struct SessionImage {
    pub session: Session,
    pub username: Option<ByteString>,
    /// The connection ended before the stop: (expiry deadline, delayed will due). `None`:
    /// the session was online when the broker stopped.
    pub offline: Option<(Option<std::time::Instant>, Option<std::time::Instant>)>,
}

/// The copy a `SESSION` body belongs to.
pub fn session_header<'a>(r: &mut Rd<'a>) -> Result<(ByteString, u64), Bad> {
    Ok((r.string()?, r.u64()?))
}

/// Apply the sub-records in `r` to `copy` (`None`: no image seen yet, `Some(None)`: dropped).
/// Records before the first image of a copy are ignored (its image was compacted into a
/// snapshot that also holds them).
pub fn apply(
    r: &mut Rd<'_>,
    client_id: &ByteString,
    copy: &mut Option<Option<Box<SessionImage>>>,
) -> Result<(), Bad> {
    while !r.is_empty() {
        let kind = r.u8()?;
        if kind == IMAGE {
            *copy = Some(Some(Box::new(read_image(r, client_id)?)));
            continue;
        }
        if kind == DROP {
            *copy = Some(None);
            continue;
        }
        // Parse even when there is no live image, to stay in step.
        let mut img = match copy {
            Some(Some(img)) => Some(img),
            _ => None,
        };
        match kind {
            SUB => {
                let (f, s) = r.sub()?;
                if let Some(i) = img.as_mut() {
                    i.session.subscriptions.insert(f, s);
                }
            }
            UNSUB => {
                let f = r.string()?;
                if let Some(i) = img.as_mut() {
                    i.session.subscriptions.remove(&f);
                }
            }
            QUEUE => {
                let q = r.queued()?;
                if let Some(i) = img.as_mut() {
                    let x = i.session.extra_mut();
                    x.queued_bytes += q.msg.queued_size();
                    x.queue.push_back(q);
                }
            }
            POP => {
                if let Some(i) = img.as_mut() {
                    i.session.pop_queued();
                }
            }
            INFLIGHT => {
                let (id, e) = r.inflight()?;
                if let Some(i) = img.as_mut() {
                    let x = i.session.extra_mut();
                    x.next_seq = x.next_seq.max(e.seq);
                    x.inflight.insert(id, e);
                }
            }
            RELEASED => {
                let id = r.u16()?;
                if let Some(i) = img.as_mut() {
                    let x = i.session.extra_if_any();
                    if let Some(e) = x.and_then(|x| x.inflight.get_mut(&id)) {
                        e.state = InflightState::Released;
                    }
                }
            }
            DONE => {
                let id = r.u16()?;
                if let Some(i) = img.as_mut() {
                    if let Some(x) = i.session.extra_if_any() {
                        x.inflight.remove(&id);
                    }
                }
            }
            IN2 => {
                let id = r.u16()?;
                if let Some(i) = img.as_mut() {
                    i.session.extra_mut().inbound_qos2.insert(id);
                }
            }
            IN2_DONE => {
                let id = r.u16()?;
                if let Some(i) = img.as_mut() {
                    if let Some(x) = i.session.extra_if_any() {
                        x.inbound_qos2.remove(&id);
                    }
                }
            }
            OFFLINE => {
                let expires = r.opt_time()?;
                let will_due = r.opt_time()?;
                if let Some(i) = img.as_mut() {
                    i.offline = Some((expires, will_due));
                }
            }
            EXPIRY => {
                let e = r.u32()?;
                if let Some(i) = img.as_mut() {
                    i.session.session_expiry = e;
                }
            }
            _ => return Err(Bad),
        }
    }
    Ok(())
}

/// A whole session as one byte string (a session moving to another cluster node).
pub fn session_bytes(s: &Session, username: Option<&ByteString>) -> Vec<u8> {
    let mut out = Vec::new();
    put_image(&mut out, s, username);
    out
}

/// [`session_bytes`] read back: the session of `client_id` and its user name.
pub fn session_from_bytes(
    buf: &[u8],
    client_id: &ByteString,
) -> Result<(Session, Option<ByteString>), Bad> {
    let mut r = Rd::new(buf);
    if r.u8()? != IMAGE {
        return Err(Bad);
    }
    let img = read_image(&mut r, client_id)?;
    if !r.is_empty() {
        return Err(Bad);
    }
    Ok((img.session, img.username))
}

fn read_image(r: &mut Rd<'_>, client_id: &ByteString) -> Result<SessionImage, Bad> {
    let username = r.opt_str()?;
    let version = match r.u8()? {
        3 => crate::protocol::ProtocolVersion::V31,
        4 => crate::protocol::ProtocolVersion::V311,
        5 => crate::protocol::ProtocolVersion::V5,
        _ => return Err(Bad),
    };
    let mut s = Session::new(client_id.clone(), version);
    s.session_expiry = r.u32()?;
    s.will = r.opt(|r| r.will())?.map(Box::new);
    s.next_packet_id = r.u16()?.max(1);
    let next_seq = r.u64()?;
    if next_seq > 0 {
        s.extra_mut().next_seq = next_seq;
    }
    let subs = r.count()?;
    if subs > 0 {
        // Not more than the record can hold (each is at least 7 bytes).
        s.subscriptions.reserve(subs.min(r.remaining() / 7));
    }
    for _ in 0..subs {
        if r.u8()? != SUB {
            return Err(Bad);
        }
        let (f, sub) = r.sub()?;
        s.subscriptions.insert(f, sub);
    }
    for _ in 0..r.count()? {
        if r.u8()? != INFLIGHT {
            return Err(Bad);
        }
        let (id, e) = r.inflight()?;
        s.extra_mut().inflight.insert(id, e);
    }
    for _ in 0..r.count()? {
        if r.u8()? != QUEUE {
            return Err(Bad);
        }
        let q = r.queued()?;
        let x = s.extra_mut();
        x.queued_bytes += q.msg.queued_size();
        x.queue.push_back(q);
    }
    for _ in 0..r.count()? {
        s.extra_mut().inbound_qos2.insert(r.u16()?);
    }
    Ok(SessionImage {
        session: s,
        username,
        offline: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ProtocolVersion, SubscriptionOptions};

    fn msg(topic: &str, payload: &str, qos: QoS) -> Message {
        Message::new(MessageData {
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos,
            retain: false,
            properties: PublishProperties {
                user_properties: vec![("k".into(), "v".into())],
                content_type: Some("text/plain".into()),
                ..Default::default()
            },
            expires_at: None,
            publisher: Some("pub".into()),
        })
    }

    #[test]
    fn a_session_survives_image_and_changes() {
        let mut s = Session::new("c1".into(), ProtocolVersion::V5);
        s.session_expiry = 300;
        s.subscriptions.insert(
            "a/#".into(),
            Subscription {
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                },
                subscription_id: Some(7),
            },
        );
        s.extra_mut().inbound_qos2.insert(9);
        let mut subs = Vec::new();
        put_image(&mut subs, &s, Some(&"user".into()));
        let q = Queued {
            msg: msg("a/b", "hello", QoS::AtLeastOnce),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![7],
        };
        put_queued_of(&mut subs, &q);
        put_queued_of(&mut subs, &q);
        put_u8(&mut subs, POP);
        put_id(&mut subs, IN2_DONE, 9);
        put_id(&mut subs, IN2, 10);
        put_unsub(&mut subs, "a/#");
        put_offline(&mut subs, None, None);
        let mut out = Vec::new();
        session_frame(&mut out, "c1", 42, &subs);
        let Frame::Ok(body, used) = read_frame(&out) else {
            panic!("frame")
        };
        assert_eq!(used, out.len());
        let mut r = Rd::new(body);
        assert_eq!(r.u8(), Ok(SESSION));
        let (id, epoch) = session_header(&mut r).unwrap();
        assert_eq!((id.as_ref(), epoch), ("c1", 42));
        let mut copy = None;
        apply(&mut r, &id, &mut copy).unwrap();
        let img = copy.unwrap().unwrap();
        assert_eq!(img.username.as_deref(), Some("user"));
        assert_eq!(img.session.session_expiry, 300);
        let x = img.session.extra();
        assert_eq!(x.queue.len(), 1);
        assert_eq!(x.queued_bytes, q.msg.queued_size());
        assert_eq!(x.queue.front().unwrap().msg, q.msg);
        assert!(x.inbound_qos2.contains(&10));
        assert!(!x.inbound_qos2.contains(&9));
        assert_eq!(img.session.subscriptions().count(), 0);
        assert_eq!(img.offline, Some((None, None)));
    }

    #[test]
    fn a_flipped_bit_or_a_cut_is_seen() {
        let mut out = Vec::new();
        retain_frame(&mut out, 3, "t", Some(&msg("t", "x", QoS::AtMostOnce)));
        for cut in 0..out.len() {
            assert_eq!(read_frame(&out[..cut]), Frame::Short, "cut at {cut}");
        }
        for i in HEADER..out.len() {
            let mut b = out.clone();
            b[i] ^= 1;
            assert_eq!(read_frame(&b), Frame::Damaged, "bit at {i}");
        }
    }
}
