//! Retained messages, keyed by topic name in a trie of topic levels.
//!
//! A SUBSCRIBE visits the retained messages matching its filter by walking the trie with the
//! filter: a literal level follows one child, `+` follows every child, `#` takes the whole subtree
//! (the node it hangs on included: `a/#` matches `a`). Cost: the nodes on the matching paths,
//! not the whole store. Filters starting with a wildcard skip top-level `$` topics.
//!
//! The store only maps topics to messages: the MQTT rule "a retained PUBLISH with an empty
//! payload deletes the retained message" is the caller's (call [`RetainedStore::remove`]).
//! The callback gets only the message, so `M` should carry its topic (a stored PUBLISH does).
use super::levels::{level_count, split_level, LevelMap, TooDeep, MAX_LEVELS};

#[derive(Debug)]
struct Node<M> {
    children: LevelMap<Node<M>>,
    msg: Option<M>,
}

impl<M> Default for Node<M> {
    fn default() -> Self {
        Node {
            children: LevelMap::default(),
            msg: None,
        }
    }
}

impl<M> Node<M> {
    fn is_empty(&self) -> bool {
        self.msg.is_none() && self.children.is_empty()
    }

    fn subtree(&self, f: &mut impl FnMut(&M)) {
        if let Some(m) = &self.msg {
            f(m);
        }
        self.children.for_each(|_, c| c.subtree(f));
    }

    /// `rest`: filter levels still to match below this node (`None`: all matched).
    fn visit(&self, rest: Option<&str>, f: &mut impl FnMut(&M)) {
        let Some(rest) = rest else {
            if let Some(m) = &self.msg {
                f(m);
            }
            return;
        };
        let (level, next) = split_level(rest);
        match (level, next) {
            ("#", None) => self.subtree(f),
            ("+", _) => self.children.for_each(|_, c| c.visit(next, f)),
            _ => {
                if let Some(c) = self.children.get(level) {
                    c.visit(next, f);
                }
            }
        }
    }

    fn remove(&mut self, topic: &str) -> Option<M> {
        let (level, next) = split_level(topic);
        let child = self.children.get_mut(level)?;
        let removed = match next {
            None => child.msg.take(),
            Some(next) => child.remove(next),
        };
        if removed.is_some() && child.is_empty() {
            self.children.remove(level);
        }
        removed
    }
}

/// Topic name -> retained message.
#[derive(Debug)]
pub struct RetainedStore<M> {
    root: Node<M>,
    len: usize,
}

impl<M> Default for RetainedStore<M> {
    fn default() -> Self {
        RetainedStore {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<M> RetainedStore<M> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `msg` as the retained message of `topic`, returning the one it replaces. Refuses
    /// topics deeper than [`MAX_LEVELS`](super::levels::MAX_LEVELS).
    pub fn set(&mut self, topic: &str, msg: M) -> Result<Option<M>, TooDeep> {
        if level_count(topic) > MAX_LEVELS {
            return Err(TooDeep);
        }
        let mut node = &mut self.root;
        let mut rest = Some(topic);
        while let Some(r) = rest {
            let (level, next) = split_level(r);
            node = node.children.get_or_insert_with(level, Node::default);
            rest = next;
        }
        let old = node.msg.replace(msg);
        if old.is_none() {
            self.len += 1;
        }
        Ok(old)
    }

    /// Deletes the retained message of `topic` (freeing trie nodes left empty).
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        let r = self.root.remove(topic);
        if r.is_some() {
            self.len -= 1;
        }
        r
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        let mut rest = Some(topic);
        while let Some(r) = rest {
            let (level, next) = split_level(r);
            node = node.children.get(level)?;
            rest = next;
        }
        node.msg.as_ref()
    }

    /// Calls `f` for every retained message whose topic matches `filter` (no particular order).
    /// Allocates nothing.
    pub fn matching(&self, filter: &str, mut f: impl FnMut(&M)) {
        let f = &mut f;
        let (level, next) = split_level(filter);
        match (level, next) {
            // Wildcards at the first level never match topics starting with `$`.
            ("#", None) => self.root.children.for_each(|k, c| {
                if !k.starts_with('$') {
                    c.subtree(f)
                }
            }),
            ("+", _) => self.root.children.for_each(|k, c| {
                if !k.starts_with('$') {
                    c.visit(next, f)
                }
            }),
            _ => {
                if let Some(c) = self.root.children.get(level) {
                    c.visit(next, f);
                }
            }
        }
    }

    /// Calls `f` for every retained message, `$` topics included (snapshots).
    pub fn for_each(&self, mut f: impl FnMut(&M)) {
        self.root.subtree(&mut f);
    }

    /// Number of retained messages.
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

    fn store(topics: &[&'static str]) -> RetainedStore<&'static str> {
        let mut s = RetainedStore::new();
        for t in topics {
            assert_eq!(s.set(t, *t), Ok(None));
        }
        s
    }

    fn visit(s: &RetainedStore<&'static str>, filter: &str) -> Vec<&'static str> {
        let mut v = Vec::new();
        s.matching(filter, |m| v.push(*m));
        v.sort_unstable();
        v
    }

    fn sorted(mut v: Vec<&'static str>) -> Vec<&'static str> {
        v.sort_unstable();
        v
    }

    const TOPICS: &[&str] = &[
        "sport",
        "sport/",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "/finance",
        "/",
        "a//b",
        "$SYS/monitor/Clients",
        "$SYS",
    ];

    #[test]
    fn spec_examples() {
        let s = store(TOPICS);
        assert_eq!(s.len(), TOPICS.len());
        assert_eq!(
            visit(&s, "sport/tennis/player1/#"),
            sorted(vec![
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ])
        );
        assert_eq!(
            visit(&s, "sport/tennis/+"),
            sorted(vec!["sport/tennis/player1", "sport/tennis/player2"])
        );
        assert_eq!(visit(&s, "sport/+"), vec!["sport/"]);
        assert_eq!(visit(&s, "+/+"), sorted(vec!["sport/", "/finance", "/"]));
        assert_eq!(visit(&s, "/+"), sorted(vec!["/finance", "/"]));
        assert_eq!(visit(&s, "+"), vec!["sport"]);
        assert_eq!(visit(&s, "#").len(), TOPICS.len() - 2, "no $ topics for #");
        assert_eq!(
            visit(&s, "$SYS/#"),
            sorted(vec!["$SYS", "$SYS/monitor/Clients"])
        );
        assert_eq!(visit(&s, "+/monitor/Clients"), Vec::<&str>::new());
        assert_eq!(visit(&s, "$SYS/monitor/+"), vec!["$SYS/monitor/Clients"]);
        assert_eq!(visit(&s, "a/+/b"), vec!["a//b"]);
        assert_eq!(visit(&s, "a//b"), vec!["a//b"]);
        assert_eq!(visit(&s, "sport"), vec!["sport"]);
        assert_eq!(visit(&s, "nothing/#"), Vec::<&str>::new());
        for f in [
            "#",
            "+",
            "+/#",
            "sport/#",
            "/#",
            "+/+/#",
            "a/#",
            "$SYS/#",
            "+/tennis/#",
        ] {
            let want: Vec<&str> = TOPICS
                .iter()
                .copied()
                .filter(|t| filter_matches(f, t))
                .collect();
            assert_eq!(visit(&s, f), sorted(want), "filter {f}");
        }
    }

    #[test]
    fn set_replace_get_remove() {
        let mut s: RetainedStore<u32> = RetainedStore::new();
        assert_eq!(s.set("a/b", 1), Ok(None));
        assert_eq!(s.set("a/b", 2), Ok(Some(1)));
        assert_eq!(s.set("a", 3), Ok(None));
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("a/b"), Some(&2));
        assert_eq!(s.get("a/c"), None);
        assert_eq!(s.remove("a/c"), None);
        assert_eq!(s.remove("a/b"), Some(2));
        assert_eq!(s.get("a"), Some(&3));
        assert_eq!(s.remove("a"), Some(3));
        assert!(s.is_empty());
        assert!(s.root.is_empty(), "nodes must be pruned");
        let deep = vec!["x"; MAX_LEVELS + 1].join("/");
        assert_eq!(s.set(&deep, 9), Err(TooDeep));
        assert!(s.is_empty());
    }

    fn flevel() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$s", "", "+"])
    }
    fn tlevel() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$s", ""])
    }
    fn filter() -> impl Strategy<Value = String> {
        (prop::collection::vec(flevel(), 0..4), any::<bool>()).prop_filter_map(
            "empty",
            |(mut lv, hash)| {
                if hash {
                    lv.push("#");
                }
                (!lv.is_empty()).then(|| lv.join("/"))
            },
        )
    }
    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(tlevel(), 1..5).prop_map(|l| l.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn differential_against_reference(
            ops in prop::collection::vec((topic(), any::<bool>()), 1..60),
            filters in prop::collection::vec(filter(), 1..20),
        ) {
            let mut s: RetainedStore<(String, usize)> = RetainedStore::new();
            let mut model: HashMap<String, usize> = HashMap::new();
            for (i, (t, set)) in ops.iter().enumerate() {
                if *set {
                    let old = s.set(t, (t.clone(), i)).unwrap().map(|m| m.1);
                    prop_assert_eq!(old, model.insert(t.clone(), i));
                } else {
                    prop_assert_eq!(s.remove(t).map(|m| m.1), model.remove(t));
                }
                prop_assert_eq!(s.len(), model.len());
            }
            for f in &filters {
                let mut got = Vec::new();
                s.matching(f, |(t, i)| got.push((t.clone(), *i)));
                got.sort_unstable();
                let mut want: Vec<(String, usize)> = model
                    .iter()
                    .filter(|(t, _)| filter_matches(f, t))
                    .map(|(t, i)| (t.clone(), *i))
                    .collect();
                want.sort_unstable();
                prop_assert_eq!(got, want, "filter {:?}", f);
            }
            for t in model.keys() {
                prop_assert!(s.remove(t).is_some());
            }
            prop_assert!(s.root.is_empty());
        }
    }
}
