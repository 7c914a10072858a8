//! One worker's log writer: a storage thread that appends what the worker's core produced,
//! makes it durable, and tells the worker which batch is on disk.
//!
//! The worker never blocks on the disk: it hands records over (`submit`, one short lock
//! shared with this thread only) and goes on; its acknowledgements wait in the core
//! (`durability = sync`) until `committed()` reaches their batch. Whatever piles up while
//! an fdatasync runs goes out in the next write: one commit for many records (group commit),
//! so the cost per message falls as the load rises.
//!
//! Why a thread and not the worker's ring: an `IORING_OP_FSYNC` on a regular file is
//! executed by the kernel's io-wq worker threads anyway; a thread of our own costs the same,
//! keeps the engine (being reworked into its own crate) out of file I/O, and gives one place
//! where a write error is seen and retried.
//!
//! `batched`: this thread only writes (acknowledgements wait for the write); a second thread
//! runs the fdatasync every `commit_interval_ms`, so no write waits behind it.
//!
//! Disk full or another I/O error: the records stay in memory, the file is cut back to its
//! last good length, `failed()` turns true (the core then refuses what it could not keep),
//! and the write is retried every 200 ms until it succeeds.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Durability;
use crate::metrics::{add, WorkerMetrics};

enum Item {
    /// Records up to and including batch `.1`.
    Records(Vec<u8>, u64),
    /// A complete snapshot of the worker (ends with an END frame).
    Snapshot(Vec<u8>),
}

#[derive(Default)]
struct Queue {
    items: Vec<Item>,
    stop: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    cv: Condvar,
    committed: AtomicU64,
    failed: Arc<AtomicBool>,
}

/// The worker's end of its log.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// Called by the storage thread after a commit (wakes the worker).
pub type Notify = Box<dyn Fn() + Send>;

/// `w{N}` inside the data dir.
pub fn worker_dir(data_dir: &Path, worker: usize) -> PathBuf {
    data_dir.join(format!("w{worker}"))
}

pub fn log_name(seq: u64) -> String {
    format!("log-{seq:016}.log")
}

pub fn snap_name(seq: u64) -> String {
    format!("snap-{seq:016}.snap")
}

/// Parse `log-N.log` / `snap-N.snap`: (is_snapshot, N).
pub fn parse_name(name: &str) -> Option<(bool, u64)> {
    if let Some(n) = name
        .strip_prefix("log-")
        .and_then(|n| n.strip_suffix(".log"))
    {
        return n.parse().ok().map(|n| (false, n));
    }
    if let Some(n) = name
        .strip_prefix("snap-")
        .and_then(|n| n.strip_suffix(".snap"))
    {
        return n.parse().ok().map(|n| (true, n));
    }
    None
}

pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `bytes` as snapshot `seq` of `dir`: temp file, fsync, rename, fsync of the directory.
pub fn write_snapshot(dir: &Path, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{}.tmp", snap_name(seq)));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(snap_name(seq)))?;
    fsync_dir(dir)
}

/// Delete the logs and snapshots of `dir` older than `seq` (and stray temp files).
pub fn remove_older(dir: &Path, seq: u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let old = match parse_name(&name) {
            Some((_, n)) => n < seq,
            None => name.ends_with(".tmp"),
        };
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Log {
    /// Start the storage thread of `worker`, appending to `log-{seq}` in `dir`. `failed` is
    /// set while a write fails (one flag for every worker of a data dir: they share a disk).
    pub fn start(
        dir: PathBuf,
        seq: u64,
        mode: Durability,
        commit_interval: Duration,
        metrics: Arc<WorkerMetrics>,
        notify: Notify,
        failed: Arc<AtomicBool>,
    ) -> std::io::Result<Log> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            committed: AtomicU64::new(0),
            failed,
        });
        let path = dir.join(log_name(seq));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        fsync_dir(&dir)?;
        // batched: a thread of its own runs the fdatasync every interval, so writes (which
        // acknowledgements wait for) never wait behind it.
        let syncer = if mode == Durability::Batched {
            let current = Arc::new(Mutex::new(file.try_clone()?));
            let stop = Arc::new(AtomicBool::new(false));
            let (c, st, m, d) = (current.clone(), stop.clone(), metrics.clone(), dir.clone());
            std::thread::Builder::new()
                .name("ringmq-sync".into())
                .spawn(move || {
                    while !st.load(Ordering::Relaxed) {
                        std::thread::sleep(commit_interval);
                        let f = c.lock();
                        if let Err(e) = f.sync_data() {
                            add(&m.storage_errors, 1);
                            tracing::error!(dir = %d.display(), error = %e, "fdatasync failed");
                        }
                    }
                })?;
            Some((current, stop))
        } else {
            None
        };
        let mut w = Writer {
            inner: inner.clone(),
            dir,
            seq,
            file,
            len,
            mode,
            metrics,
            notify,
            unsynced: false,
            syncer,
            failing: false,
            lat: [0; 40],
        };
        let t = std::thread::Builder::new()
            .name("ringmq-log".into())
            .spawn(move || w.run())?;
        Ok(Log {
            inner,
            thread: Arc::new(Mutex::new(Some(t))),
        })
    }

    /// Hand over the records of `batch` (appended to what waits; `bytes` is left empty).
    pub fn submit(&self, bytes: &mut Vec<u8>, batch: u64) {
        let mut q = self.inner.queue.lock();
        match q.items.last_mut() {
            Some(Item::Records(b, n)) => {
                b.extend_from_slice(bytes);
                bytes.clear();
                *n = batch;
            }
            _ => q.items.push(Item::Records(std::mem::take(bytes), batch)),
        }
        drop(q);
        self.inner.cv.notify_one();
    }

    /// Hand over a snapshot: the log starts a new segment after it, and older segments and
    /// snapshots are deleted once it is durable.
    pub fn snapshot(&self, bytes: Vec<u8>) {
        self.inner.queue.lock().items.push(Item::Snapshot(bytes));
        self.inner.cv.notify_one();
    }

    /// The highest batch that is durable (in `none` and `batched` mode: written).
    pub fn committed(&self) -> u64 {
        self.inner.committed.load(Ordering::Acquire)
    }

    /// Set while a write fails and is retried (the core's limits read it).
    pub fn failed_flag(&self) -> Arc<AtomicBool> {
        self.inner.failed.clone()
    }

    /// Write what waits, sync, and end the thread (returns when it ended).
    pub fn stop(&self) {
        self.inner.queue.lock().stop = true;
        self.inner.cv.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    inner: Arc<Inner>,
    dir: PathBuf,
    seq: u64,
    file: File,
    /// Bytes of the current segment known to be written whole.
    len: u64,
    mode: Durability,
    metrics: Arc<WorkerMetrics>,
    notify: Notify,
    unsynced: bool,
    /// batched: the file the sync thread syncs, and its stop flag.
    syncer: Option<(Arc<Mutex<File>>, Arc<AtomicBool>)>,
    /// This writer's last write failed.
    failing: bool,
    /// Commit durations by power of two of microseconds (for p50 / p99 at close).
    lat: [u64; 40],
}

/// The upper bound (microseconds) of the bucket holding quantile `q` of `lat`.
fn quantile(lat: &[u64; 40], q: f64) -> u64 {
    let n: u64 = lat.iter().sum();
    if n == 0 {
        return 0;
    }
    let want = ((n as f64) * q).ceil() as u64;
    let mut seen = 0;
    for (i, c) in lat.iter().enumerate() {
        seen += c;
        if seen >= want {
            return 1u64 << i;
        }
    }
    1u64 << 39
}

impl Writer {
    fn run(&mut self) {
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_batch = 0u64;
        let mut stop_tries = 0;
        loop {
            let (items, stop) = {
                let mut q = self.inner.queue.lock();
                while q.items.is_empty() && !q.stop && pending.is_empty() {
                    self.inner.cv.wait(&mut q);
                }
                (std::mem::take(&mut q.items), q.stop)
            };
            for item in items {
                match item {
                    Item::Records(b, n) => {
                        pending.extend_from_slice(&b);
                        pending_batch = n;
                    }
                    Item::Snapshot(s) => {
                        // Everything before the snapshot request belongs to the old segment.
                        self.commit(&mut pending, pending_batch, true);
                        self.rotate(&s);
                    }
                }
            }
            let force = stop || self.mode == Durability::Sync;
            self.commit(&mut pending, pending_batch, force);
            if stop && pending.is_empty() {
                if let Some((_, st)) = &self.syncer {
                    st.store(true, Ordering::Relaxed);
                }
                let m = &self.metrics;
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                // Counts of this worker (its metrics are its own); p50/p99 are bucket bounds.
                let commits = get(&m.storage_commits);
                tracing::info!(
                    dir = %self.dir.display(),
                    commits,
                    bytes = get(&m.storage_bytes_written),
                    mean_commit_us = get(&m.storage_commit_micros) / commits.max(1),
                    p50_commit_us_at_most = quantile(&self.lat, 0.5),
                    p99_commit_us_at_most = quantile(&self.lat, 0.99),
                    le_1ms = get(&m.storage_commit_le_1ms),
                    le_10ms = get(&m.storage_commit_le_10ms),
                    le_100ms = get(&m.storage_commit_le_100ms),
                    gt_100ms = get(&m.storage_commit_gt_100ms),
                    "log closed"
                );
                return;
            }
            if stop {
                stop_tries += 1;
                if stop_tries > 25 {
                    tracing::error!(dir = %self.dir.display(), bytes = pending.len(),
                        "stopping with log records that could not be written");
                    return;
                }
            }
            if !pending.is_empty() {
                // A failed write: try again shortly (the records stay in memory).
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Write `pending` (and sync if `sync`); on success it is emptied and `batch` is
    /// reported committed.
    fn commit(&mut self, pending: &mut Vec<u8>, batch: u64, sync: bool) {
        if pending.is_empty() && !(sync && self.unsynced) {
            return;
        }
        let t0 = Instant::now();
        let res = (|| -> std::io::Result<()> {
            if !pending.is_empty() {
                self.file.write_all_at(pending, self.len)?;
                self.unsynced = true;
            }
            if sync && self.unsynced {
                self.file.sync_data()?;
                self.unsynced = false;
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                let m = &self.metrics;
                self.len += pending.len() as u64;
                add(&m.storage_bytes_written, pending.len() as u64);
                add(&m.storage_commits, 1);
                let us = t0.elapsed().as_micros() as u64;
                add(&m.storage_commit_micros, us);
                self.lat[(64 - us.leading_zeros() as usize).min(39)] += 1;
                add(
                    match us {
                        0..=1000 => &m.storage_commit_le_1ms,
                        1001..=10_000 => &m.storage_commit_le_10ms,
                        10_001..=100_000 => &m.storage_commit_le_100ms,
                        _ => &m.storage_commit_gt_100ms,
                    },
                    1,
                );
                pending.clear();
                // sync: on disk; batched: written (synced within commit_interval).
                self.inner.committed.store(batch, Ordering::Release);
                if self.failing {
                    self.failing = false;
                    self.inner.failed.store(false, Ordering::Relaxed);
                    tracing::warn!(dir = %self.dir.display(), "log writes succeed again");
                }
                (self.notify)();
            }
            Err(e) => {
                add(&self.metrics.storage_errors, 1);
                // Cut a partial write off so the retry appends whole records.
                let _ = self.file.set_len(self.len);
                self.inner.failed.store(true, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::error!(dir = %self.dir.display(), error = %e,
                        "cannot write the log: refusing QoS 1/2 PUBLISH and persistent CONNECT until it works again");
                }
            }
        }
    }

    /// A snapshot: written as `snap-{seq+1}`, then the log goes on in `log-{seq+1}` and the
    /// older files go. On failure the old segment simply continues.
    fn rotate(&mut self, snap: &[u8]) {
        let next = self.seq + 1;
        let t0 = Instant::now();
        let res = (|| -> std::io::Result<File> {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(log_name(next)))?;
            write_snapshot(&self.dir, next, snap)?;
            Ok(f)
        })();
        match res {
            Ok(f) => {
                if let Some((current, _)) = &self.syncer {
                    if let Ok(c) = f.try_clone() {
                        *current.lock() = c;
                    }
                }
                self.file = f;
                self.len = 0;
                self.seq = next;
                remove_older(&self.dir, next);
                add(&self.metrics.snapshots, 1);
                self.metrics
                    .snapshot_last_bytes
                    .store(snap.len() as u64, Ordering::Relaxed);
                let us = t0.elapsed().as_micros() as u64;
                self.metrics
                    .snapshot_last_micros
                    .store(us, Ordering::Relaxed);
            }
            Err(e) => {
                add(&self.metrics.storage_errors, 1);
                let _ = std::fs::remove_file(self.dir.join(log_name(next)));
                tracing::error!(dir = %self.dir.display(), error = %e, "snapshot failed; the log goes on");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut lat = [0u64; 40];
        // 90 commits of 3 us (bucket 2: up to 4 us), 10 of 1500 us (bucket 11: up to 2048 us).
        lat[2] = 90;
        lat[11] = 10;
        assert_eq!(quantile(&lat, 0.5), 4);
        assert_eq!(quantile(&lat, 0.99), 2048);
        assert_eq!(quantile(&[0; 40], 0.5), 0);
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(parse_name(&log_name(7)), Some((false, 7)));
        assert_eq!(parse_name(&snap_name(12)), Some((true, 12)));
        assert_eq!(parse_name("snap-x.snap"), None);
        assert_eq!(parse_name("other"), None);
    }
}
