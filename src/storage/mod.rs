//! Durable state (`--data-dir`): one append-only log per worker, written by a storage thread
//! of that worker, snapshots that bound the log, and recovery at start.
//!
//! | file | answers |
//! |---|---|
//! | `record.rs` | the bytes on disk: frames with a CRC, session and retained records |
//! | `log.rs` | the storage thread: group commit, fdatasync, snapshot rotation, write errors |
//! | `recover.rs` | reading a data dir back: torn tails, corruption, which copy of a session wins |
//! | `clock.rs` | wall-clock times for deadlines that must survive a restart |
//!
//! What the broker core writes and when an acknowledgement may leave is in
//! `broker/persist.rs`.
//!
//! # Data dir layout
//! ```text
//! DIR/LOCK                          flock: one broker per data dir
//! DIR/w{N}/snap-{seq}.snap          worker N's newest snapshot (older ones deleted)
//! DIR/w{N}/log-{seq}.log            worker N's log since that snapshot
//! ```

pub mod clock;
pub mod log;
pub mod record;
pub mod recover;

use std::path::PathBuf;

use serde::Deserialize;

use crate::broker::Shared;

/// When an acknowledged change is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Before the acknowledgement leaves (fdatasync; one commit per loop pass and worker).
    #[default]
    Sync,
    /// Written at once, fdatasync every `commit_interval_ms`: a crash of the machine can
    /// lose that much; a crash of the broker alone loses nothing written.
    Batched,
    /// No log: a snapshot every `snapshot_interval_secs` and at a clean stop.
    None,
}

/// The storage settings of a broker with a data dir.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub commit_interval_ms: u64,
    pub snapshot_interval_secs: u64,
    /// Go on from the last good record when a log is damaged before its end.
    pub recover_truncate: bool,
}

/// Append the whole retained store as of its current version to a snapshot.
pub fn retained_image(shared: &Shared, out: &mut Vec<u8>) {
    let store = shared.retained.lock();
    let version = shared
        .retain_version
        .load(std::sync::atomic::Ordering::Relaxed);
    record::marker_frame(out, record::RETAINED_IMAGE, version);
    store.for_each(|msg| record::retain_frame(out, version, &msg.topic, Some(msg)));
}
