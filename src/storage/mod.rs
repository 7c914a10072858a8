//! Durable state (`--data-dir`): one append-only log per worker, written by a storage thread
//! of that worker, snapshots that bound the log, and recovery at start.
//!
//! | file | answers |
//! |---|---|
//! | `record.rs` | the bytes on disk: frames with a CRC, session and retained records |
//! | `log.rs` | the storage thread: group commit, fdatasync, snapshot rotation, write errors |
//! | `recover.rs` | reading a data dir back: torn tails, corruption, which copy of a session wins |
//! | `session/journal.rs`, `session/wallclock.rs` | the encoders a session uses to note its changes, and wall-clock times |
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

pub mod log;
pub mod record;
pub mod recover;

/// Wall-clock times for what is written to disk (kept with the session types, which note
/// their changes themselves).
pub use crate::session::wallclock as clock;

use std::path::PathBuf;

use serde::Deserialize;

/// When an acknowledged change is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Before the acknowledgement leaves (fdatasync; one commit per loop pass and worker).
    #[default]
    Sync,
    /// Acknowledged once written to the kernel, fdatasync every `commit_interval_ms`: a
    /// crash of the machine can lose that much; a crash of the broker alone loses nothing
    /// acknowledged.
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
