//! Topic filter trie: subscriptions keyed level by level, matched against topic names.
//!
//! Each node stands for a filter prefix and holds its literal children (by level), its `+` child,
//! the subscribers of `prefix/#` and the subscribers of `prefix` itself. Matching a topic walks
//! the literal child and the `+` child of every node it reaches and reports the `#` subscribers
//! of every node on the way (which gives `#` its "parent level" rule: `sport/#` matches `sport`).
//! At the root, the `+` and `#` branches are skipped for topics starting with `$`.
//!
//! Cost of a match: O(levels x branching of wildcards actually present) node visits, plus one
//! callback per matching (filter, subscriber); it allocates nothing.
use std::hash::Hash;

use super::levels::{level_count, split_level, LevelMap, Subs, TooDeep, MAX_LEVELS};

#[derive(Debug)]
struct Node<K, V> {
    children: LevelMap<Node<K, V>>,
    /// Subscribers of exactly `<this prefix>`.
    subs: Subs<K, V>,
    /// The `+` child and the `#` subscribers, boxed: most nodes have neither, and a node is
    /// then 56 bytes (one subscription to a new leaf costs its node, its level and its entry).
    wild: Option<Box<Wild<K, V>>>,
}

#[derive(Debug)]
struct Wild<K, V> {
    plus: Option<Node<K, V>>,
    /// Subscribers of `<this prefix>/#`.
    hash: Subs<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: LevelMap::default(),
            subs: Subs::default(),
            wild: None,
        }
    }
}

impl<K, V> Default for Wild<K, V> {
    fn default() -> Self {
        Wild {
            plus: None,
            hash: Subs::default(),
        }
    }
}

impl<K: Copy + Eq + Hash, V> Node<K, V> {
    /// Empty nodes are pruned, and so is an empty `wild`.
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.wild.is_none() && self.subs.is_empty()
    }

    fn plus(&self) -> Option<&Node<K, V>> {
        self.wild.as_ref()?.plus.as_ref()
    }

    fn hash(&self) -> Option<&Subs<K, V>> {
        self.wild.as_ref().map(|w| &w.hash)
    }

    /// `rest`: the topic levels not consumed yet (`None`: all consumed).
    fn walk(&self, rest: Option<&str>, f: &mut impl FnMut(K, &V)) {
        if let Some(hash) = self.hash() {
            hash.for_each(f);
        }
        match rest {
            None => self.subs.for_each(f),
            Some(rest) => {
                let (level, next) = split_level(rest);
                if let Some(child) = self.children.get(level) {
                    child.walk(next, f);
                }
                if let Some(plus) = self.plus() {
                    plus.walk(next, f);
                }
            }
        }
    }

    /// Removes `id` from the filter `rest` below this node, pruning nodes left empty.
    fn remove(&mut self, rest: &str, id: K) -> Option<V> {
        let (level, next) = split_level(rest);
        let hash = level == "#" && next.is_none();
        if hash || level == "+" {
            let wild = self.wild.as_deref_mut()?;
            let removed = if hash {
                wild.hash.remove(id)
            } else {
                let plus = wild.plus.as_mut()?;
                let removed = plus.remove_below(next, id);
                if removed.is_some() && plus.is_empty() {
                    wild.plus = None;
                }
                removed
            };
            if wild.plus.is_none() && wild.hash.is_empty() {
                self.wild = None;
            }
            return removed;
        }
        let child = self.children.get_mut(level)?;
        let removed = child.remove_below(next, id);
        if removed.is_some() && child.is_empty() {
            self.children.remove(level);
        }
        removed
    }

    /// `remove` on this node's own subscribers (`rest` `None`) or below it.
    fn remove_below(&mut self, rest: Option<&str>, id: K) -> Option<V> {
        match rest {
            None => self.subs.remove(id),
            Some(rest) => self.remove(rest, id),
        }
    }
}

/// Topic filter -> subscribers. `K` identifies a subscriber (small and `Copy`: a session index,
/// a `(worker, slot)` pair...); `V` is what the subscription carries (QoS, options, identifier).
/// One value per (filter, subscriber): subscribing again to the same filter replaces it.
#[derive(Debug)]
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        SubscriptionTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Copy + Eq + Hash, V> SubscriptionTrie<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `id` to `filter` with `value`. Returns the value it replaced, if `id` was
    /// already subscribed to this exact filter. Refuses filters deeper than
    /// [`MAX_LEVELS`](super::levels::MAX_LEVELS).
    pub fn insert(&mut self, filter: &str, id: K, value: V) -> Result<Option<V>, TooDeep> {
        if level_count(filter) > MAX_LEVELS {
            return Err(TooDeep);
        }
        let mut node = &mut self.root;
        let mut rest = filter;
        let subs = loop {
            let (level, next) = split_level(rest);
            if level == "#" && next.is_none() {
                break &mut node.wild.get_or_insert_with(Box::default).hash;
            }
            node = if level == "+" {
                let wild = node.wild.get_or_insert_with(Box::default);
                wild.plus.get_or_insert_with(Node::default)
            } else {
                node.children.get_or_insert_with(level, Node::default)
            };
            match next {
                None => break &mut node.subs,
                Some(next) => rest = next,
            }
        };
        let replaced = subs.insert(id, value);
        if replaced.is_none() {
            self.len += 1;
        }
        Ok(replaced)
    }

    /// Unsubscribes `id` from `filter` (the exact filter string it subscribed with). Returns its
    /// value, or `None` if it was not subscribed. Nodes left empty are freed.
    pub fn remove(&mut self, filter: &str, id: K) -> Option<V> {
        let removed = self.root.remove(filter, id);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The value of `id`'s subscription to exactly `filter`.
    pub fn get(&self, filter: &str, id: K) -> Option<&V> {
        let mut node = &self.root;
        let mut rest = filter;
        loop {
            let (level, next) = split_level(rest);
            if level == "#" && next.is_none() {
                return node.hash()?.get(id);
            }
            node = if level == "+" {
                node.plus()?
            } else {
                node.children.get(level)?
            };
            match next {
                None => return node.subs.get(id),
                Some(next) => rest = next,
            }
        }
    }

    /// Calls `f(id, value)` for every subscription whose filter matches topic name `topic`. A
    /// subscriber with several matching filters is reported once per filter (the caller merges,
    /// e.g. keeping the highest QoS). Allocates nothing.
    pub fn matches(&self, topic: &str, mut f: impl FnMut(K, &V)) {
        let f = &mut f;
        let root = &self.root;
        let dollar = topic.starts_with('$');
        if !dollar {
            if let Some(hash) = root.hash() {
                hash.for_each(f);
            }
        }
        let (level, next) = split_level(topic);
        if let Some(child) = root.children.get(level) {
            child.walk(next, f);
        }
        if !dollar {
            if let Some(plus) = root.plus() {
                plus.walk(next, f);
            }
        }
    }

    /// Number of (filter, subscriber) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::filter_matches;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn matched(t: &SubscriptionTrie<u64, &'static str>, topic: &str) -> Vec<&'static str> {
        let mut v = Vec::new();
        t.matches(topic, |_, f| v.push(*f));
        v.sort_unstable();
        v
    }

    /// A trie with one subscriber per filter, the value being the filter itself.
    fn trie_of(filters: &[&'static str]) -> SubscriptionTrie<u64, &'static str> {
        let mut t = SubscriptionTrie::new();
        for (i, f) in filters.iter().enumerate() {
            assert_eq!(t.insert(f, i as u64, *f), Ok(None));
        }
        t
    }

    const FILTERS: &[&str] = &[
        "sport/tennis/player1/#",
        "sport/tennis/+",
        "sport/#",
        "sport/+",
        "+/+",
        "/+",
        "+",
        "#",
        "+/tennis/#",
        "$SYS/#",
        "$SYS/monitor/+",
        "+/monitor/Clients",
        "a//b",
        "a/+/b",
        "/",
        "/#",
        "sport",
    ];

    #[test]
    fn spec_examples_and_edge_cases() {
        let t = trie_of(FILTERS);
        assert_eq!(t.len(), FILTERS.len());
        let expect = |topic: &str| {
            let mut v: Vec<&str> = FILTERS
                .iter()
                .copied()
                .filter(|f| filter_matches(f, topic))
                .collect();
            v.sort_unstable();
            v
        };
        // Explicit expectations for the spec's examples (not only the reference matcher).
        let mut want = vec![
            "sport/tennis/player1/#",
            "sport/tennis/+",
            "sport/#",
            "+/tennis/#",
            "#",
        ];
        want.sort_unstable();
        assert_eq!(matched(&t, "sport/tennis/player1"), want);
        let mut want = vec!["sport/tennis/player1/#", "sport/#", "+/tennis/#", "#"];
        want.sort_unstable();
        assert_eq!(matched(&t, "sport/tennis/player1/ranking"), want);
        let mut want = vec!["sport/#", "+", "#", "sport"];
        want.sort_unstable();
        assert_eq!(matched(&t, "sport"), want);
        let mut want = vec!["sport/#", "sport/+", "+/+", "#"];
        want.sort_unstable();
        assert_eq!(matched(&t, "sport/"), want);
        let mut want = vec!["+/+", "/+", "#", "/#"];
        want.sort_unstable();
        assert_eq!(matched(&t, "/finance"), want);
        let mut want = vec!["$SYS/#", "$SYS/monitor/+"];
        want.sort_unstable();
        assert_eq!(matched(&t, "$SYS/monitor/Clients"), want);
        assert_eq!(matched(&t, "$SYS"), vec!["$SYS/#"]);
        assert!(matched(&t, "$other/x").is_empty());
        let mut want = vec!["a//b", "a/+/b", "#"];
        want.sort_unstable();
        assert_eq!(matched(&t, "a//b"), want);
        let mut want = vec!["/", "/+", "+/+", "/#", "#"];
        want.sort_unstable();
        assert_eq!(matched(&t, "/"), want);
        for topic in [
            "sport/tennis/player1",
            "sport/tennis/player1/score/wimbledon",
            "sport",
            "sport/",
            "/finance",
            "$SYS/monitor/Clients",
            "a//b",
            "a/x/b",
            "/",
            "//",
            "x",
            "",
        ] {
            assert_eq!(matched(&t, topic), expect(topic), "topic {topic:?}");
        }
    }

    #[test]
    fn replace_get_remove_prunes() {
        let mut t: SubscriptionTrie<u64, u8> = SubscriptionTrie::new();
        assert_eq!(t.insert("a/+/c", 1, 0), Ok(None));
        assert_eq!(t.insert("a/+/c", 1, 2), Ok(Some(0)));
        assert_eq!(t.insert("a/+/c", 2, 1), Ok(None));
        assert_eq!(t.insert("a/#", 1, 5), Ok(None));
        assert_eq!(t.len(), 3);
        assert_eq!(t.get("a/+/c", 1), Some(&2));
        assert_eq!(t.get("a/#", 1), Some(&5));
        assert_eq!(t.get("a/+", 1), None);
        assert_eq!(t.remove("a/+/c", 3), None);
        assert_eq!(t.remove("a/+", 1), None);
        assert_eq!(t.remove("a/+/c", 1), Some(2));
        assert_eq!(t.remove("a/+/c", 1), None);
        assert_eq!(t.remove("a/+/c", 2), Some(1));
        assert!(t.root.children.get("a").is_some());
        assert_eq!(t.remove("a/#", 1), Some(5));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "empty nodes must be pruned");
    }

    #[test]
    fn many_subscribers_and_children() {
        let mut t: SubscriptionTrie<u32, u32> = SubscriptionTrie::new();
        for i in 0..1000u32 {
            t.insert("hot/topic", i, i).unwrap();
            t.insert(&format!("dev/{i}/t"), i, i).unwrap();
        }
        let mut n = 0u64;
        let mut sum = 0u64;
        t.matches("hot/topic", |k, v| {
            assert_eq!(k, *v);
            n += 1;
            sum += u64::from(k);
        });
        assert_eq!((n, sum), (1000, 999 * 1000 / 2));
        let mut got = Vec::new();
        t.matches("dev/517/t", |k, _| got.push(k));
        assert_eq!(got, vec![517]);
        for i in 0..1000u32 {
            assert_eq!(t.remove("hot/topic", i), Some(i));
            assert_eq!(t.remove(&format!("dev/{i}/t"), i), Some(i));
        }
        assert!(t.root.is_empty());
    }

    #[test]
    fn nodes_stay_small() {
        // 10M filters are 10M+ nodes: the 1M-session recovery figure depends on this size
        // (a broker's key and value are 8 and 12 bytes; the views' are 0 and 4).
        let sizes = (
            std::mem::size_of::<Node<u64, [u32; 3]>>(),
            std::mem::size_of::<Node<(), u32>>(),
            std::mem::size_of::<LevelMap<Node<u64, u64>>>(),
        );
        assert_eq!(sizes, (64, 56, 24));
    }

    #[test]
    fn too_deep_is_refused() {
        let mut t: SubscriptionTrie<u8, ()> = SubscriptionTrie::new();
        let ok = vec!["a"; MAX_LEVELS].join("/");
        let deep = vec!["a"; MAX_LEVELS + 1].join("/");
        assert_eq!(t.insert(&ok, 1, ()), Ok(None));
        assert_eq!(t.insert(&deep, 1, ()), Err(TooDeep));
        assert_eq!(t.len(), 1);
        let mut n = 0;
        t.matches(&ok, |_, _| n += 1);
        t.matches(&deep, |_, _| n += 10);
        assert_eq!(n, 1);
        assert_eq!(t.remove(&deep, 1), None);
        assert_eq!(t.remove(&ok, 1), Some(()));
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$s", "", "+"])
    }
    fn topic_level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$s", ""])
    }
    fn filter() -> impl Strategy<Value = String> {
        (prop::collection::vec(level(), 0..4), any::<bool>()).prop_filter_map(
            "empty",
            |(mut lv, hash)| {
                if hash {
                    lv.push("#");
                }
                if lv.is_empty() {
                    None
                } else {
                    Some(lv.join("/"))
                }
            },
        )
    }
    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(topic_level(), 1..5).prop_map(|l| l.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn differential_against_reference(
            ops in prop::collection::vec((filter(), 0u64..4, any::<bool>()), 1..60),
            topics in prop::collection::vec(topic(), 1..20),
        ) {
            let mut t: SubscriptionTrie<u64, u32> = SubscriptionTrie::new();
            let mut model: HashMap<(String, u64), u32> = HashMap::new();
            for (i, (f, id, add)) in ops.iter().enumerate() {
                if *add {
                    let r = t.insert(f, *id, i as u32).unwrap();
                    prop_assert_eq!(r, model.insert((f.clone(), *id), i as u32));
                } else {
                    prop_assert_eq!(t.remove(f, *id), model.remove(&(f.clone(), *id)));
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for topic in &topics {
                let mut got = Vec::new();
                t.matches(topic, |k, v| got.push((k, *v)));
                got.sort_unstable();
                let mut want: Vec<(u64, u32)> = model
                    .iter()
                    .filter(|((f, _), _)| filter_matches(f, topic))
                    .map(|((_, k), v)| (*k, *v))
                    .collect();
                want.sort_unstable();
                prop_assert_eq!(got, want, "topic {:?}", topic);
            }
            for ((f, id), _) in model.clone() {
                prop_assert!(t.remove(&f, id).is_some());
            }
            prop_assert!(t.root.is_empty());
        }
    }
}
