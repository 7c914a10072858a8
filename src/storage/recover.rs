//! Reading a data dir back at start.
//!
//! For every worker directory: its newest snapshot, then its logs from that snapshot on, in
//! order. A log that ends inside a record (a crash during a write) is cut there: the record
//! was never acknowledged, because its commit never completed. A damaged record anywhere
//! else stops the start with the file and offset, unless `--recover-truncate` says to go on
//! from the last good record (what follows it in that worker's logs is then lost).
//!
//! # Which copy of a session wins
//! A session can have copies in several workers' files: a take-over writes the new owner's
//! image before the old owner writes `DROP` (`broker/persist.rs`). Every copy carries the
//! ownership epoch under which it was held, and epochs only grow, so per client id the copy
//! with the highest epoch is the session, unless that copy was dropped (then the session
//! ended). Snapshots repeat the drops of the last minute, so a drop outlives the old copy it
//! refers to even when the worker that wrote it compacts its log first.
//!
//! # What is pruned
//! Sessions whose expiry passed while the broker was down (their pending will is published
//! at start, as it would have been at expiry), queued messages whose Message Expiry passed,
//! expired retained messages. A session that was online when the broker stopped lost its
//! connection then: its expiry counts from the start, and its will is published at start
//! (or after its Will Delay, if it does not reconnect first).
//!
//! # When the files already hold the state
//! A worker directory that held only a snapshot (no log record after it), whose every copy
//! was restored as it was written (nothing pruned, no will due, no copy elsewhere, offline
//! with its deadline), holds exactly what its worker restores: `Recovered::exact` names its
//! snapshot, and the start writes no new one for that worker (its log goes on after it).
//! This is the usual restart after a clean stop of idle sessions: rewriting the same
//! hundreds of megabytes would only delay the start.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytestring::ByteString;
use hashbrown::HashMap;

use super::log::parse_name;
use super::record::{self, Frame, Rd, SessionImage};
use crate::session::{keepalive, Message, Session};

/// A session restored at start, for the worker that will hold it.
pub struct Restored {
    pub client_id: ByteString,
    pub epoch: u64,
    pub username: Option<ByteString>,
    pub session: Session,
    pub expires_at: Option<Instant>,
    pub delayed_will: Option<(Message, Instant)>,
}

/// What a data dir held.
#[derive(Default)]
pub struct Recovered {
    /// The sessions for each of the `n` workers.
    pub sessions: Vec<Vec<Restored>>,
    /// Retained messages and the version of the store they make up.
    pub retained: Vec<Message>,
    pub retain_version: u64,
    /// Wills due at start (sessions that expired meanwhile, or were online at the stop).
    pub wills: Vec<Message>,
    /// Highest ownership epoch seen (new claims must be above it).
    pub max_epoch: u64,
    /// Sequence number for the files written from now on.
    pub next_seq: u64,
    /// Records read.
    pub records: u64,
    /// Bytes cut off torn log tails.
    pub torn_bytes: u64,
    /// Per worker: the sequence number of the snapshot in its directory that holds exactly
    /// what it restores (see the module header), if one does.
    pub exact: Vec<Option<u64>>,
    /// Per worker: QoS 2 messages another worker fanned out to it that it had not routed
    /// before the stop (see the module header), to route to its sessions at start.
    pub fanouts: Vec<Vec<Message>>,
    /// Per worker: the same for a member of a shared subscription (`$share/G/F`) that was
    /// picked there: one member of it gets the message at start.
    pub fanout_picks: Vec<Vec<(ByteString, Message)>>,
}

/// A copy's state while reading: `None` no image seen, `Some(None)` dropped.
type Copy = (usize, Option<Option<Box<SessionImage>>>);

#[derive(Default)]
struct State {
    copies: HashMap<(ByteString, u64), Copy>,
    /// Retained image of the best snapshot: (version, messages).
    image: Option<(u64, Vec<Message>)>,
    /// Retained changes in logs: (version, topic, message or deleted).
    changes: Vec<(u64, ByteString, Option<Message>)>,
    records: u64,
    torn_bytes: u64,
    /// Per directory read: (worker, snapshot sequence) when it held a snapshot and nothing
    /// after it, and every copy in it was an image.
    clean: Vec<(usize, u64)>,
    /// Directories whose files hold something the restored state does not (a copy lost to
    /// another, a pruned session...).
    dirty: hashbrown::HashSet<usize>,
    /// `FANOUT` records: (directory, fan-out).
    fanouts: Vec<(usize, record::Fanout)>,
    /// `FANOUT_DONE`: (directory, sequence number).
    fanouts_done: hashbrown::HashSet<(usize, u64)>,
    /// `ROUTED`: (directory, origin, sequence number, part).
    routed: hashbrown::HashSet<(usize, u16, u64, u32)>,
}

fn bad(path: &Path, off: usize, what: &str) -> String {
    format!(
        "{}: {what} at offset {off}; start with --recover-truncate to go on from the last good record (what follows it is lost)",
        path.display()
    )
}

/// The worker directories `w{N}` of a data dir.
pub fn worker_dirs(dir: &Path) -> std::io::Result<Vec<(usize, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix('w').and_then(|n| n.parse::<usize>().ok()) {
            if e.file_type()?.is_dir() {
                v.push((n, e.path()));
            }
        }
    }
    v.sort();
    Ok(v)
}

/// Read the data dir `dir` for a broker of `n` workers.
pub fn recover(dir: &Path, n: usize, truncate: bool, now: Instant) -> Result<Recovered, String> {
    let dirs = worker_dirs(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Each worker's files on a thread of their own, then merged.
    let results: Vec<Result<(State, u64), String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|(w, wdir)| sc.spawn(move || read_worker(*w, wdir, truncate)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("recovery thread failed".into()))
            })
            .collect()
    });
    let mut st = State::default();
    let mut max_seq = 0u64;
    for r in results {
        let (part, seq) = r?;
        max_seq = max_seq.max(seq);
        st.records += part.records;
        st.torn_bytes += part.torn_bytes;
        st.clean.extend(part.clean);
        st.changes.extend(part.changes);
        st.fanouts.extend(part.fanouts);
        st.fanouts_done.extend(part.fanouts_done);
        st.routed.extend(part.routed);
        if let Some(img) = part.image {
            if st.image.as_ref().is_none_or(|(v, _)| img.0 > *v) {
                st.image = Some(img);
            }
        }
        if st.copies.is_empty() {
            st.copies = part.copies;
            continue;
        }
        for (k, (w, copy)) in part.copies {
            match st.copies.get_mut(&k) {
                // The same copy in two workers' files (restarted with another worker
                // count, or an unconfirmed hand-off): a drop wins.
                Some(e) => {
                    st.dirty.extend([e.0, w]);
                    if matches!(copy, Some(None)) || e.1.is_none() {
                        *e = (w, copy);
                    }
                }
                None => {
                    st.copies.insert(k, (w, copy));
                }
            }
        }
    }
    let mut rec = resolve(st, n, max_seq + 1, now);
    if dirs.iter().any(|(w, _)| *w >= n) {
        // A directory beyond the workers is removed after the start: what its files held
        // (sessions, retained changes, perhaps the newest retained image) must go into new
        // snapshots.
        rec.exact = vec![None; n];
    }
    Ok(rec)
}

/// One worker directory: its newest snapshot, then its logs.
fn read_worker(w: usize, wdir: &Path, truncate: bool) -> Result<(State, u64), String> {
    let mut st = State::default();
    let mut max_seq = 0u64;
    let mut snaps = Vec::new();
    let mut logs = Vec::new();
    let rd = std::fs::read_dir(wdir).map_err(|e| format!("{}: {e}", wdir.display()))?;
    for e in rd.flatten() {
        if let Some((is_snap, seq)) = parse_name(&e.file_name().to_string_lossy()) {
            max_seq = max_seq.max(seq);
            if is_snap {
                snaps.push(seq);
            } else {
                logs.push(seq);
            }
        }
    }
    snaps.sort_unstable();
    logs.sort_unstable();
    let mut from = 0;
    let mut snapshot = None;
    while let Some(seq) = snaps.pop() {
        let path = wdir.join(super::log::snap_name(seq));
        match read_snapshot(&path, w, &mut st) {
            Ok(all_images) => {
                from = seq;
                snapshot = all_images.then_some(seq);
                break;
            }
            Err(e) if truncate => {
                tracing::error!("{e}: trying an older snapshot");
            }
            Err(e) => return Err(e),
        }
    }
    let logs: Vec<u64> = logs.into_iter().filter(|&s| s >= from).collect();
    let before = st.records;
    for (i, &seq) in logs.iter().enumerate() {
        let path = wdir.join(super::log::log_name(seq));
        let last = i + 1 == logs.len();
        if !read_log(&path, w, last, truncate, &mut st)? {
            break;
        }
    }
    if let Some(seq) = snapshot.filter(|_| st.records == before && st.torn_bytes == 0) {
        st.clean.push((w, seq));
    }
    Ok((st, max_seq))
}

/// A file's frames through a buffer of a few MiB (grown only for a bigger frame): a
/// 400 MB snapshot is not read into memory whole, whose fresh pages the kernel would have to
/// zero first.
struct Frames {
    file: std::fs::File,
    path: PathBuf,
    buf: Vec<u8>,
    /// `buf[pos..len]` is unread; `base` is the file offset of `buf[0]`.
    pos: usize,
    len: usize,
    base: u64,
    /// File bytes not in `buf` yet.
    left: u64,
}

const CHUNK: usize = 4 << 20;

impl Frames {
    fn open(path: &Path) -> Result<Frames, String> {
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let file = std::fs::File::open(path).map_err(err)?;
        let left = file.metadata().map_err(err)?.len();
        Ok(Frames {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            pos: 0,
            len: 0,
            base: 0,
            left,
        })
    }

    /// File offset of the next frame.
    fn offset(&self) -> usize {
        (self.base + self.pos as u64) as usize
    }

    fn at_end(&self) -> bool {
        self.pos == self.len && self.left == 0
    }

    /// Make at least `want` unread bytes available, or all that the file has left.
    fn fill(&mut self, want: usize) -> Result<(), String> {
        use std::io::Read;
        let have = self.len - self.pos;
        if have >= want || self.left == 0 {
            return Ok(());
        }
        // Move the unread tail to the front, then read after it.
        self.buf.copy_within(self.pos..self.len, 0);
        self.base += self.pos as u64;
        self.len = have;
        self.pos = 0;
        let target = want
            .max(CHUNK)
            .min(have + self.left.min(usize::MAX as u64) as usize);
        if self.buf.len() < target {
            self.buf.resize(target, 0);
        }
        while self.len < target {
            let n = self
                .file
                .read(&mut self.buf[self.len..target])
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            if n == 0 {
                // Shorter than its size said: nothing more.
                self.left = 0;
                break;
            }
            self.len += n;
            self.left = self.left.saturating_sub(n as u64);
        }
        Ok(())
    }

    /// The next frame (reading as much of the file as it needs); `Frame::Short` only at the
    /// end of the file.
    fn next(&mut self) -> Result<record::Frame<'_>, String> {
        self.fill(record::HEADER)?;
        let unread = &self.buf[self.pos..self.len];
        if unread.len() >= record::HEADER {
            let body = u32::from_le_bytes(unread[0..4].try_into().unwrap()) as usize;
            if body <= record::MAX_BODY {
                self.fill(record::HEADER + body)?;
            }
        }
        Ok(record::read_frame(&self.buf[self.pos..self.len]))
    }

    fn advance(&mut self, used: usize) {
        self.pos += used;
    }

    /// Everything from the next frame to the end of the file.
    fn rest(&mut self) -> Result<&[u8], String> {
        let all = (self.len - self.pos) + self.left as usize;
        self.fill(all)?;
        Ok(&self.buf[self.pos..self.len])
    }
}

/// Ok(true): every session frame held an image (no drops, no records to apply to one).
fn read_snapshot(path: &Path, w: usize, st: &mut State) -> Result<bool, String> {
    let mut frames = Frames::open(path)?;
    let mut image: Option<(u64, Vec<Message>)> = None;
    let mut copies = Vec::new();
    let mut fan_state = false;
    loop {
        let off = frames.offset();
        match frames.next()? {
            Frame::Ok(body, used) => {
                let mut r = Rd::new(body);
                let kind = r.u8().map_err(|_| bad(path, off, "empty record"))?;
                match kind {
                    record::END => break,
                    record::RETAINED_IMAGE => {
                        let v = r.u64().map_err(|_| bad(path, off, "bad record"))?;
                        image = Some((v, Vec::new()));
                    }
                    record::RETAIN => {
                        let (_, _, m) =
                            read_retain(&mut r).map_err(|_| bad(path, off, "bad record"))?;
                        if let (Some((_, msgs)), Some(m)) = (image.as_mut(), m) {
                            msgs.push(m);
                        }
                    }
                    record::SESSION => {
                        let (id, epoch) = record::session_header(&mut r)
                            .map_err(|_| bad(path, off, "bad record"))?;
                        let mut copy = None;
                        record::apply(&mut r, &id, &mut copy)
                            .map_err(|_| bad(path, off, "bad record"))?;
                        copies.push(((id, epoch), copy));
                    }
                    record::FANOUT | record::ROUTED => {
                        fan_state = true;
                        read_fanout_record(kind, &mut r, w, st)
                            .map_err(|_| bad(path, off, "bad record"))?;
                    }
                    _ => return Err(bad(path, off, "unknown record")),
                }
                st.records += 1;
                frames.advance(used);
            }
            Frame::Short => return Err(bad(path, off, "snapshot ends without its END record")),
            Frame::Damaged => return Err(bad(path, off, "damaged record")),
        }
    }
    // Fan-outs are settled at start: a snapshot that holds any is written anew.
    let mut all_images = !fan_state;
    st.copies.reserve(copies.len());
    for (k, copy) in copies {
        all_images &= matches!(copy, Some(Some(_)));
        if copy.is_some() && st.copies.insert(k, (w, copy)).is_some() {
            all_images = false;
        }
    }
    if let Some(img) = image {
        if st.image.as_ref().is_none_or(|(v, _)| img.0 > *v) {
            st.image = Some(img);
        }
    }
    Ok(all_images)
}

/// A `FANOUT`, `FANOUT_DONE` or `ROUTED` body (after its kind) of directory `w`.
fn read_fanout_record(
    kind: u8,
    r: &mut Rd<'_>,
    w: usize,
    st: &mut State,
) -> Result<(), record::Bad> {
    match kind {
        record::FANOUT => st.fanouts.push((w, record::read_fanout(r)?)),
        record::FANOUT_DONE => {
            st.fanouts_done.insert((w, r.u64()?));
        }
        _ => {
            let origin = r.u16()?;
            let seq = r.u64()?;
            st.routed.insert((w, origin, seq, r.u32()?));
        }
    }
    Ok(())
}

fn read_retain(r: &mut Rd<'_>) -> Result<(u64, ByteString, Option<Message>), record::Bad> {
    let v = r.u64()?;
    let topic = r.string()?;
    let m = match r.u8()? {
        0 => None,
        1 => Some(r.message()?),
        _ => return Err(record::Bad),
    };
    Ok((v, topic, m))
}

/// Replay one log file; false: stop reading this worker's logs (damage, truncating).
fn read_log(
    path: &Path,
    w: usize,
    last: bool,
    truncate: bool,
    st: &mut State,
) -> Result<bool, String> {
    let mut frames = Frames::open(path)?;
    while !frames.at_end() {
        let off = frames.offset();
        let frame = frames.next()?;
        let (body, used) = match frame {
            Frame::Ok(b, u) => (b, u),
            Frame::Short | Frame::Damaged => {
                let short = frame == Frame::Short;
                let rest = frames.rest()?;
                // A write cut short by a crash: only at the very end of the newest file.
                let torn = last
                    && (short || rest.iter().skip(8).all(|&b| b == 0) || {
                        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
                        record::HEADER + len >= rest.len()
                    });
                if torn {
                    st.torn_bytes += rest.len() as u64;
                    tracing::warn!(file = %path.display(), offset = off, bytes = rest.len(),
                        "log ends inside a record (interrupted write): cut off");
                    return Ok(true);
                }
                let e = bad(path, off, "damaged record");
                if truncate {
                    tracing::error!("{e}: going on from the last good record");
                    return Ok(false);
                }
                return Err(e);
            }
        };
        let mut r = Rd::new(body);
        let ok = (|| -> Result<(), record::Bad> {
            match r.u8()? {
                record::SESSION => {
                    let (id, epoch) = record::session_header(&mut r)?;
                    let entry = st.copies.entry((id.clone(), epoch)).or_insert((w, None));
                    entry.0 = w;
                    record::apply(&mut r, &id, &mut entry.1)?;
                }
                record::RETAIN => {
                    let (v, t, m) = read_retain(&mut r)?;
                    st.changes.push((v, t, m));
                }
                kind @ (record::FANOUT | record::FANOUT_DONE | record::ROUTED) => {
                    read_fanout_record(kind, &mut r, w, st)?;
                }
                _ => return Err(record::Bad),
            }
            Ok(())
        })();
        if ok.is_err() {
            let e = bad(path, off, "record that does not parse");
            if truncate {
                tracing::error!("{e}: going on from the last good record");
                return Ok(false);
            }
            return Err(e);
        }
        st.records += 1;
        frames.advance(used);
    }
    Ok(true)
}

fn resolve(st: State, n: usize, next_seq: u64, now: Instant) -> Recovered {
    let mut rec = Recovered {
        sessions: (0..n).map(|_| Vec::new()).collect(),
        next_seq,
        records: st.records,
        torn_bytes: st.torn_bytes,
        ..Default::default()
    };
    // Per client id: the copy with the highest epoch (dropped or not).
    let mut best: HashMap<ByteString, (u64, usize, Option<Box<SessionImage>>)> =
        HashMap::with_capacity(st.copies.len());
    let mut dirty = st.dirty;
    rec.fanouts = vec![Vec::new(); n];
    rec.fanout_picks = vec![Vec::new(); n];
    let (fanouts, done, routed) = (st.fanouts, st.fanouts_done, st.routed);
    dirty.extend(routed.iter().map(|r| r.0));
    for ((id, epoch), (w, copy)) in st.copies {
        rec.max_epoch = rec.max_epoch.max(epoch);
        let Some(img) = copy else { continue };
        match best.get_mut(&id) {
            Some(b) if b.0 >= epoch => {
                dirty.insert(w);
            }
            Some(b) => {
                dirty.insert(b.1);
                *b = (epoch, w, img);
            }
            None => {
                best.insert(id, (epoch, w, img));
            }
        }
    }
    // Fan-outs not done: each worker it went to that did not log `ROUTED` for it gets the
    // message now. Only if the publisher's packet id made it to disk (it is logged last in
    // the fan-out's batch): without it the batch was cut short, nothing of it was
    // acknowledged, and the publisher sends the message again.
    for (a, f) in fanouts {
        dirty.insert(a);
        if done.contains(&(a, f.seq)) || f.msg.is_expired(now) {
            continue;
        }
        let held = best.get(&f.client_id).is_some_and(|b| {
            b.2.as_ref()
                .is_some_and(|img| img.session.extra().inbound_qos2.contains(&f.packet_id))
        });
        if !held {
            continue;
        }
        for &w in &f.workers {
            if !routed.contains(&(w as usize, a as u16, f.seq, 0)) {
                dirty.insert(w as usize % n);
                rec.fanouts[w as usize % n].push(f.msg.clone());
            }
        }
        for (i, (w, group)) in f.groups.iter().enumerate() {
            if !routed.contains(&(*w as usize, a as u16, f.seq, i as u32 + 1)) {
                dirty.insert(*w as usize % n);
                rec.fanout_picks[*w as usize % n].push((group.clone(), f.msg.clone()));
            }
        }
    }
    for (id, (epoch, w, img)) in best {
        let Some(img) = img else {
            dirty.insert(w);
            continue;
        };
        // Restored by another worker than the one whose files hold it.
        if w >= n {
            dirty.insert(w % n);
        }
        let SessionImage {
            mut session,
            username,
            offline,
        } = *img;
        let will = session.will.as_deref().cloned();
        let (expires_at, will_due) = match offline {
            Some(o) => o,
            None => {
                dirty.insert(w);
                // Online at the stop: the connection was lost now.
                let expiry = keepalive::session_deadline(now, session.session_expiry());
                let delay = will
                    .as_ref()
                    .filter(|_| session.version().is_v5())
                    .and_then(|w| w.properties.will_delay_interval)
                    .unwrap_or(0);
                let due = will
                    .as_ref()
                    .map(|_| now + std::time::Duration::from_secs(u64::from(delay)));
                (expiry, due)
            }
        };
        let will_msg = match (&will, will_due) {
            (Some(w), Some(due)) => Some((Message::from_will(w, &id, due.max(now)), due)),
            _ => None,
        };
        if expires_at.is_some_and(|t| t <= now) {
            dirty.insert(w);
            // Expired while the broker was down: gone, its pending will goes now.
            if let Some((m, _)) = will_msg {
                rec.wills.push(m);
            }
            continue;
        }
        let delayed_will = match will_msg {
            Some((m, due)) if due <= now => {
                dirty.insert(w);
                rec.wills.push(m);
                None
            }
            other => other,
        };
        if let Some(x) = session.extra_if_any() {
            let queued = x.queue.len();
            x.queue.retain(|q| !q.msg.is_expired(now));
            if x.queue.len() != queued {
                dirty.insert(w);
            }
            x.queued_bytes = x.queue.iter().map(|q| q.msg.queued_size()).sum();
        }
        rec.sessions[w % n].push(Restored {
            client_id: id,
            epoch,
            username,
            session,
            expires_at,
            delayed_will,
        });
    }
    // Retained: the newest snapshot image, then every later change in version order.
    let (base, msgs) = st.image.unwrap_or((0, Vec::new()));
    let mut map: HashMap<ByteString, Message> =
        msgs.into_iter().map(|m| (m.topic.clone(), m)).collect();
    let mut changes = st.changes;
    changes.sort_by_key(|c| c.0);
    rec.retain_version = base;
    for (v, topic, m) in changes {
        if v <= base {
            continue;
        }
        rec.retain_version = v;
        match m {
            Some(m) => map.insert(topic, m),
            None => map.remove(&topic),
        };
    }
    rec.retained = map.into_values().filter(|m| !m.is_expired(now)).collect();
    rec.exact = vec![None; n];
    for (w, seq) in st.clean {
        if w < n && !dirty.contains(&w) {
            rec.exact[w] = Some(seq);
        }
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolVersion;
    use crate::storage::log;
    use std::time::Duration;

    /// (client id, epoch, offline until: None = online at the stop)
    type Copy<'a> = (&'a str, u64, Option<Instant>);

    fn write_snapshot(dir: &Path, w: usize, seq: u64, copies: &[Copy<'_>]) {
        let mut out = Vec::new();
        for &(id, epoch, until) in copies {
            let s = Session::new(id.into(), ProtocolVersion::V5);
            let mut body = Vec::new();
            record::put_image(&mut body, &s, None);
            if let Some(t) = until {
                record::put_offline(&mut body, Some(t), None);
            }
            record::session_frame(&mut out, id, epoch, &body);
        }
        record::marker_frame(&mut out, record::RETAINED_IMAGE, 0);
        record::marker_frame(&mut out, record::END, 0);
        let wdir = log::worker_dir(dir, w);
        std::fs::create_dir_all(&wdir).unwrap();
        log::write_snapshot(&wdir, seq, &out).unwrap();
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringmq-exact-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_directory_is_exact_only_when_its_files_hold_what_is_restored() {
        let now = Instant::now();
        let later = Some(now + Duration::from_secs(3600));
        let exact = |d: &Path, n: usize| recover(d, n, false, now).unwrap().exact;

        let d = dir("clean");
        write_snapshot(&d, 0, 1, &[("a", 1, later)]);
        write_snapshot(&d, 1, 1, &[("b", 2, later)]);
        assert_eq!(exact(&d, 2), vec![Some(1), Some(1)]);
        // Fewer workers: dir 1 goes away, its sessions move.
        assert_eq!(exact(&d, 1), vec![None]);
        // A record after the snapshot.
        let mut rec = Vec::new();
        record::session_frame(&mut rec, "a", 1, &[record::DROP]);
        std::fs::write(log::worker_dir(&d, 0).join(log::log_name(2)), &rec).unwrap();
        assert_eq!(exact(&d, 2), vec![None, Some(1)]);
        let _ = std::fs::remove_dir_all(&d);

        // Expired, online at the stop, or a copy that lost to a newer one elsewhere: rewritten.
        // The newer copy's directory holds what is restored; a worker without a directory
        // has nothing to keep.
        let d = dir("pruned");
        let past = Some(now - Duration::from_secs(60));
        write_snapshot(&d, 0, 1, &[("a", 1, later), ("x", 2, past)]);
        write_snapshot(&d, 1, 1, &[("b", 3, None)]);
        write_snapshot(&d, 2, 1, &[("c", 4, later)]);
        write_snapshot(&d, 3, 1, &[("c", 5, later), ("d", 6, later)]);
        assert_eq!(exact(&d, 5), vec![None, None, None, Some(1), None]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
