//! The ClientId ownership table: which worker holds the session of each ClientId.
//!
//! This is the only shared mutable state on the connect path. It is sharded (a mutex per shard)
//! and touched only by CONNECT, by the end of a session, and never by PUBLISH traffic.
//!
//! An [`Owner`] names a worker, the session slot on that worker, and an `epoch` unique to each
//! claim. A claim *replaces* the current owner atomically and returns it, so of two racing
//! CONNECTs for one ClientId the second to take the shard lock is the final owner, and it knows
//! exactly which owner it displaced (the first claimant), which it must then take over.
//! Releases are conditional on the epoch: a late release by a displaced owner never removes its
//! successor. The take-over handshake that follows a claim is described in
//! `broker/takeover.rs`.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::session::ClientId;

/// A session slot on one worker (index and generation of the worker's session slab).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub index: u32,
    pub generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub worker: u16,
    pub session: SessionKey,
    /// Unique per claim, never reused.
    pub epoch: u64,
}

const SHARDS: usize = 64;

pub struct OwnershipTable {
    /// Keyed by the client id the session and the worker's slot share (32 bytes an entry).
    /// Padded: workers lock different shards at once.
    shards: Vec<CachePadded<Mutex<HashMap<ClientId, Owner>>>>,
    hasher: hashbrown::DefaultHashBuilder,
    next_epoch: AtomicU64,
}

impl Default for OwnershipTable {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnershipTable {
    pub fn new() -> Self {
        OwnershipTable {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            next_epoch: AtomicU64::new(1),
        }
    }

    fn shard(&self, id: &str) -> &Mutex<HashMap<ClientId, Owner>> {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    /// Epochs from now on are above `min` (after a restart: above every recovered one).
    pub fn seed_epoch(&self, min: u64) {
        self.next_epoch.fetch_max(min, Ordering::Relaxed);
    }

    /// A fresh epoch for a claim.
    pub fn new_epoch(&self) -> u64 {
        self.next_epoch.fetch_add(1, Ordering::Relaxed)
    }

    /// Room for `n` more ids, spread over the shards (before restoring a data dir: no shard
    /// grows under its lock while the workers claim).
    pub fn reserve(&self, n: usize) {
        for s in &self.shards {
            s.lock().reserve(n / SHARDS + n / SHARDS / 8 + 1);
        }
    }

    /// Make `owner` the owner of `id`, returning the owner it displaced (if any).
    pub fn claim(&self, id: &ClientId, owner: Owner) -> Option<Owner> {
        self.shard(id).lock().insert(id.clone(), owner)
    }

    /// Remove `id` only if `owner` (same epoch) still owns it. Returns whether it was removed.
    pub fn release(&self, id: &str, owner: Owner) -> bool {
        let mut shard = self.shard(id).lock();
        match shard.get(id) {
            Some(cur) if cur.epoch == owner.epoch => {
                shard.remove(id);
                true
            }
            _ => false,
        }
    }

    /// Update the session slot of the current owner when `epoch` still owns `id`.
    pub fn rebind(&self, id: &str, epoch: u64, session: SessionKey) -> bool {
        let mut shard = self.shard(id).lock();
        match shard.get_mut(id) {
            Some(cur) if cur.epoch == epoch => {
                cur.session = session;
                true
            }
            _ => false,
        }
    }

    pub fn get(&self, id: &str) -> Option<Owner> {
        self.shard(id).lock().get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn owner(t: &OwnershipTable, worker: u16, index: u32) -> Owner {
        Owner {
            worker,
            session: SessionKey {
                index,
                generation: 0,
            },
            epoch: t.new_epoch(),
        }
    }

    #[test]
    fn claim_returns_displaced_owner_and_release_is_epoch_checked() {
        let t = OwnershipTable::new();
        let id = ClientId::from("c1");
        let a = owner(&t, 0, 1);
        let b = owner(&t, 1, 2);
        assert_eq!(t.claim(&id, a), None);
        assert_eq!(t.claim(&id, b), Some(a));
        // A late release by the displaced owner must not remove its successor.
        assert!(!t.release("c1", a));
        assert_eq!(t.get("c1"), Some(b));
        assert!(t.release("c1", b));
        assert!(t.is_empty());
    }

    #[test]
    fn rebind_only_for_current_epoch() {
        let t = OwnershipTable::new();
        let id = ClientId::from("c");
        let a = owner(&t, 0, 1);
        t.claim(&id, a);
        let k = SessionKey {
            index: 9,
            generation: 3,
        };
        assert!(!t.rebind("c", a.epoch + 100, k));
        assert!(t.rebind("c", a.epoch, k));
        assert_eq!(t.get("c").unwrap().session, k);
    }

    /// Many threads claim the same ids at once: the claims form one chain per id, each claimant
    /// sees exactly the owner it displaced, and exactly one owner remains.
    #[test]
    fn racing_claims_form_a_single_chain() {
        let t = Arc::new(OwnershipTable::new());
        let threads = 4;
        let per = 2000;
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for i in 0..per {
                        let id = ClientId::from(format!("id{}", i % 50).as_str());
                        let me = owner(&t, w as u16, i as u32);
                        let prev = t.claim(&id, me);
                        seen.push((id, me.epoch, prev.map(|p| p.epoch)));
                    }
                    seen
                })
            })
            .collect();
        let all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        // Every epoch is displaced at most once, and exactly one epoch per id is never displaced.
        let mut displaced = std::collections::HashMap::new();
        for (_, _, prev) in &all {
            if let Some(p) = prev {
                *displaced.entry(*p).or_insert(0) += 1;
            }
        }
        assert!(displaced.values().all(|&n| n == 1));
        let survivors = all
            .iter()
            .filter(|(_, e, _)| !displaced.contains_key(e))
            .count();
        assert_eq!(survivors, 50);
        assert_eq!(t.len(), 50);
    }
}
