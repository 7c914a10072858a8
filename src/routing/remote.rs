//! One worker's view of the topic filters the other workers' sessions subscribe to (for
//! PUBACK / PUBREC 0x10 No matching subscribers; the protocol around it is in
//! `broker::router`): per (filter, worker) the number of that worker's (session, filter)
//! subscriptions, and per worker how many of its changes the view applied. One trie path per
//! distinct filter, nothing per subscriber.

use super::trie::SubscriptionTrie;

pub struct RemoteFilters {
    /// (filter, worker) -> that worker's number of (session, filter) subscriptions.
    filters: SubscriptionTrie<u16, u32>,
    /// Per worker: its changes applied here.
    applied: Vec<u64>,
}

impl RemoteFilters {
    pub fn new(workers: usize) -> RemoteFilters {
        RemoteFilters {
            filters: SubscriptionTrie::new(),
            applied: vec![0; workers],
        }
    }

    /// Worker `from` added (`add`) or removed one subscription to `filter`: one change.
    pub fn apply(&mut self, from: u16, filter: &str, add: bool) {
        self.count(from);
        let count = self.filters.remove(filter, from).unwrap_or(0);
        let count = if add {
            count + 1
        } else {
            count.saturating_sub(1)
        };
        if count > 0 && self.filters.insert(filter, from, count).is_err() {
            // Not indexed on `from` either (its trie refuses the same depth): nothing to match.
            tracing::warn!(%filter, "filter too deep, not in the view");
        }
    }

    /// Worker `from` restored these subscriptions at start (one change each): one trie walk
    /// per filter instead of `apply`'s two.
    pub fn add_restored(&mut self, from: u16, filters: &[bytestring::ByteString]) {
        for f in filters {
            self.count(from);
            match self.filters.insert(f, from, 1) {
                Ok(Some(n)) => {
                    let _ = self.filters.insert(f, from, n + 1);
                }
                Ok(None) => {}
                Err(_) => tracing::warn!(filter = %f, "filter too deep, not in the view"),
            }
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
        let mut found = false;
        self.filters.matches(topic, |_, _| found = true);
        found
    }

    /// (filter, worker) entries held.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_filter_and_worker() {
        let mut v = RemoteFilters::new(3);
        v.apply(1, "a/+", true);
        v.apply(2, "a/+", true);
        v.apply(1, "a/+", true);
        assert!(v.matches("a/b") && !v.matches("a") && !v.matches("$x/b"));
        v.apply(1, "a/+", false);
        v.apply(2, "a/+", false);
        assert!(v.matches("a/b"), "worker 1 has one left");
        v.apply(1, "a/+", false);
        assert!(!v.matches("a/b") && v.is_empty());
        v.count(2);
        assert_eq!((v.applied(0), v.applied(1), v.applied(2)), (0, 4, 3));
    }
}
