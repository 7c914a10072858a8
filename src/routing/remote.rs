//! One worker's view of the topic filters the other workers' sessions subscribe to (for
//! PUBACK / PUBREC 0x10 No matching subscribers; the protocol around it is in
//! `broker::router`): per filter the number of the other workers' (session, filter)
//! subscriptions, and per worker how many of its changes the view applied. Nothing per
//! subscriber. A filter without wildcards (a fleet's `devices/{id}/cmd`, most of a big broker's
//! filters) is kept as its 64-bit hash only, 8 bytes in a set (a count beside it only for a
//! filter subscribed more than once), matched by one lookup of the topic's hash; only filters
//! with `+` or `#` take a trie path. Two filters with one hash share a
//! count, which stays above zero while either is subscribed, and a topic whose hash equals a
//! filter's is taken for a match: the answer is then 0x00 where 0x10 was due (a missed 0x10,
//! which the protocol allows), never a false 0x10.

use std::hash::{BuildHasher, Hasher};

use bytestring::ByteString;
use hashbrown::{DefaultHashBuilder, HashMap, HashSet};

use super::trie::SubscriptionTrie;
use crate::protocol::topic::has_wildcard;

/// The filters one worker restored at start, as the views take them: exact ones by hash.
#[derive(Default)]
pub struct RestoredFilters {
    exact: Vec<u64>,
    wild: Vec<ByteString>,
}

pub struct RemoteFilters {
    /// Hashes of the filters without wildcards that the other workers subscribe to.
    exact: HashSet<u64, Prehashed>,
    /// Those of `exact` subscribed more than once -> how many times.
    more: HashMap<u64, u32, Prehashed>,
    /// The hash of `exact`'s keys: one per broker, so a restoring worker can key its filters
    /// for every view (`note_restored`).
    hasher: DefaultHashBuilder,
    /// Filter with `+` or `#` -> the other workers' subscriptions to it.
    wild: SubscriptionTrie<(), u32>,
    /// Per worker: its changes applied here.
    applied: Vec<u64>,
}

/// The keys of `RemoteFilters::exact` are hashes already: used as they are.
#[derive(Default, Clone, Copy)]
struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;
    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; any other input still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl RemoteFilters {
    /// `hasher`: the same for every view of one broker.
    pub fn new(workers: usize, hasher: DefaultHashBuilder) -> RemoteFilters {
        RemoteFilters {
            exact: HashSet::default(),
            more: HashMap::default(),
            hasher,
            wild: SubscriptionTrie::new(),
            applied: vec![0; workers],
        }
    }

    /// Worker `from` added (`add`) or removed one subscription to `filter`: one change.
    pub fn apply(&mut self, from: u16, filter: &ByteString, add: bool) {
        self.count(from);
        match (has_wildcard(filter), add) {
            (false, true) => self.add_exact(self.hasher.hash_one(&**filter)),
            (false, false) => {
                let h = self.hasher.hash_one(&**filter);
                match self.more.get_mut(&h) {
                    Some(n) if *n > 2 => *n -= 1,
                    Some(_) => {
                        self.more.remove(&h);
                    }
                    None => {
                        self.exact.remove(&h);
                    }
                }
            }
            (true, true) => self.add_wild(filter),
            (true, false) => {
                if let Some(n) = self.wild.remove(filter, ()).filter(|&n| n > 1) {
                    let _ = self.wild.insert(filter, (), n - 1);
                }
            }
        }
    }

    /// A filter restored at start, into `list` keyed as every view of this broker keys it.
    pub fn note_restored(&self, list: &mut RestoredFilters, filter: &str) {
        if has_wildcard(filter) {
            list.wild.push(ByteString::from(filter));
        } else {
            list.exact.push(self.hasher.hash_one(filter));
        }
    }

    /// Worker `from` restored these subscriptions at start (one change each; `list` was
    /// filled by `note_restored` of a view with the same hasher).
    pub fn add_restored(&mut self, from: u16, list: &RestoredFilters) {
        self.applied[from as usize] += (list.exact.len() + list.wild.len()) as u64;
        self.exact.reserve(list.exact.len());
        for &h in &list.exact {
            self.add_exact(h);
        }
        for f in &list.wild {
            self.add_wild(f);
        }
    }

    /// One subscription more to a filter with wildcards: one trie walk, two if it was there.
    fn add_wild(&mut self, filter: &str) {
        match self.wild.insert(filter, (), 1) {
            Ok(Some(n)) => {
                let _ = self.wild.insert(filter, (), n + 1);
            }
            Ok(None) => {}
            // Not indexed on the subscribing worker either (its trie refuses the same
            // depth): nothing to match.
            Err(_) => tracing::warn!(%filter, "filter too deep, not in the view"),
        }
    }

    fn add_exact(&mut self, h: u64) {
        if !self.exact.insert(h) {
            *self.more.entry(h).or_insert(1) += 1;
        }
    }

    /// A change of worker `from` that this view does not hold itself (a shared-subscription
    /// change, kept in the shared view) was applied: counted with the others.
    pub fn count(&mut self, from: u16) {
        self.applied[from as usize] += 1;
    }

    /// Changes of worker `w` applied here.
    pub fn applied(&self, w: usize) -> u64 {
        self.applied[w]
    }

    /// Whether some filter of another worker matches topic name `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        if self.exact.contains(&self.hasher.hash_one(topic)) {
            return true;
        }
        let mut found = false;
        self.wild.matches(topic, |_, _| found = true);
        found
    }

    /// Distinct filters held (exact ones: distinct hashes).
    pub fn len(&self) -> usize {
        self.exact.len() + self.wild.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_filter_and_worker() {
        let mut v = RemoteFilters::new(3, DefaultHashBuilder::default());
        let (plus, exact) = (ByteString::from("a/+"), ByteString::from("a/b"));
        v.apply(1, &plus, true);
        v.apply(2, &plus, true);
        v.apply(1, &plus, true);
        assert!(v.matches("a/b") && !v.matches("a") && !v.matches("$x/b"));
        v.apply(1, &plus, false);
        v.apply(2, &plus, false);
        assert!(v.matches("a/b"), "one subscription left");
        v.apply(1, &plus, false);
        assert!(!v.matches("a/b") && v.is_empty());
        v.count(2);
        assert_eq!((v.applied(0), v.applied(1), v.applied(2)), (0, 4, 3));
        // Exact filters: matched by the whole topic only, counted like the others.
        v.apply(1, &exact, true);
        let mut list = RestoredFilters::default();
        v.note_restored(&mut list, &exact);
        v.note_restored(&mut list, "$SYS/x");
        v.add_restored(2, &list);
        assert_eq!(v.applied(2), 5);
        assert!(v.matches("a/b") && v.matches("$SYS/x"));
        assert!(!v.matches("a/b/c") && !v.matches("a") && !v.matches("a/"));
        assert_eq!(v.len(), 2);
        v.apply(2, &exact, false);
        assert!(v.matches("a/b"), "worker 1's subscription is left");
        v.apply(1, &exact, false);
        v.apply(1, &exact, false);
        assert!(!v.matches("a/b") && v.matches("$SYS/x"));
        // The restored `#` and the exact filter it covers are separate entries.
        let mut list = RestoredFilters::default();
        v.note_restored(&mut list, "a/#");
        v.add_restored(1, &list);
        assert!(v.matches("a/b/c") && v.matches("a"));
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn exact_filters_are_those_without_plus_or_hash() {
        for (f, wild) in [("a/+", true), ("#", true), ("+/x", true), ("a/b", false)] {
            assert_eq!(has_wildcard(f), wild, "{f}");
        }
        assert!(!has_wildcard(""));
    }
}
