//! Topic levels, the reference matcher and the level map shared by the tries (see the
//! matching rules in the `routing` module header).
use hashbrown::HashMap;
use std::hash::Hash;

/// The deepest filter or retained topic (in levels) the tries accept. Matching recurses once per
/// level, so this bounds the stack a hostile client can make the broker use. 256 is far beyond
/// real topic trees (EMQX's default limit is 128).
pub const MAX_LEVELS: usize = 256;

/// A filter or topic with more than [`MAX_LEVELS`] levels was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("topic has more than {MAX_LEVELS} levels")]
pub struct TooDeep;

/// Number of levels of a topic or filter (`/` count + 1).
pub(crate) fn level_count(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'/').count() + 1
}

/// Splits off the first level: `("a", Some("b/c"))` for `"a/b/c"`, `("c", None)` for `"c"`.
#[inline]
pub(crate) fn split_level(s: &str) -> (&str, Option<&str>) {
    match s.find('/') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Reference matcher: does topic name `topic` match topic filter `filter`? Straightforward level
/// by level comparison, used as the oracle in tests and handy for one-off checks.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/').peekable();
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) if f.peek().is_none() => return true,
            (Some(fl), Some(tl)) => {
                if fl != "+" && fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A level as a trie key, 16 bytes: up to 7 bytes inline (no allocation: most levels of a
/// topic tree are short, and a million-filter trie has millions of them), longer ones boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Level {
    Short(u8, [u8; 7]),
    Long(Box<str>),
}

impl Level {
    pub(crate) fn new(s: &str) -> Level {
        if s.len() <= 7 {
            let mut b = [0; 7];
            b[..s.len()].copy_from_slice(s.as_bytes());
            Level::Short(s.len() as u8, b)
        } else {
            Level::Long(s.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Level::Short(n, b) => &b[..*n as usize],
            Level::Long(s) => s.as_bytes(),
        }
    }

    #[inline]
    pub(crate) fn is(&self, level: &str) -> bool {
        self.bytes() == level.as_bytes()
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Whole levels of a `&str` (split at '/'): always UTF-8.
            Level::Short(n, b) => std::str::from_utf8(&b[..*n as usize]).unwrap_or_default(),
            Level::Long(s) => s,
        }
    }
}

impl From<&str> for Level {
    fn from(s: &str) -> Level {
        Level::new(s)
    }
}

/// Hashed as the level's `str`, so the map is looked up by `&str`.
impl Hash for Level {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl hashbrown::Equivalent<Level> for str {
    fn equivalent(&self, key: &Level) -> bool {
        key.is(self)
    }
}

/// Children of a trie node keyed by level: a small vector while few (linear scan beats hashing),
/// a hash map once there are more than [`LevelMap::SMALL`]. The map is boxed so the enum is one
/// vector's size, and the vector grows one entry at a time: most nodes have one child, and a
/// million-filter trie pays for every spare slot.
#[derive(Debug)]
pub(crate) enum LevelMap<N> {
    Small(Vec<(Level, N)>),
    Large(Box<HashMap<Level, N>>),
}

impl<N> Default for LevelMap<N> {
    fn default() -> Self {
        LevelMap::Small(Vec::new())
    }
}

impl<N> LevelMap<N> {
    const SMALL: usize = 16;

    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        match self {
            LevelMap::Small(v) => v.iter().find(|(k, _)| k.is(level)).map(|(_, n)| n),
            LevelMap::Large(m) => m.get(level),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            LevelMap::Small(v) => v.iter_mut().find(|(k, _)| k.is(level)).map(|(_, n)| n),
            LevelMap::Large(m) => m.get_mut(level),
        }
    }

    pub(crate) fn get_or_insert_with(&mut self, level: &str, make: impl FnOnce() -> N) -> &mut N {
        if let LevelMap::Small(v) = self {
            if v.len() >= Self::SMALL && !v.iter().any(|(k, _)| k.is(level)) {
                let m: HashMap<Level, N> = v.drain(..).collect();
                *self = LevelMap::Large(Box::new(m));
            }
        }
        match self {
            LevelMap::Small(v) => {
                let i = match v.iter().position(|(k, _)| k.is(level)) {
                    Some(i) => i,
                    None => {
                        push_exact(v, (Level::new(level), make()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            LevelMap::Large(m) => m.entry_ref(level).or_insert_with(make),
        }
    }

    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        match self {
            LevelMap::Small(v) => {
                let i = v.iter().position(|(k, _)| k.is(level))?;
                Some(v.swap_remove(i).1)
            }
            LevelMap::Large(m) => {
                let n = m.remove(level);
                if m.is_empty() {
                    *self = LevelMap::default();
                }
                n
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            LevelMap::Small(v) => v.is_empty(),
            LevelMap::Large(m) => m.is_empty(),
        }
    }

    /// Visits every (level, child) without allocating.
    #[inline]
    pub(crate) fn for_each(&self, mut f: impl FnMut(&str, &N)) {
        match self {
            LevelMap::Small(v) => v.iter().for_each(|(k, n)| f(k.as_str(), n)),
            LevelMap::Large(m) => m.iter().for_each(|(k, n)| f(k.as_str(), n)),
        }
    }
}

/// Subscribers of one filter: one inline (most filters have one subscriber: no allocation), a
/// small vector while few, a hash map when many (so subscribing and unsubscribing stay O(1) on
/// a filter with 100k subscribers). Boxed map and exact growth as in [`LevelMap`].
#[derive(Debug)]
pub(crate) enum Subs<K, V> {
    /// No subscriber, or up to [`Subs::SMALL`] once a second one came.
    Small(Vec<(K, V)>),
    One(K, V),
    Large(Box<HashMap<K, V>>),
}

impl<K, V> Default for Subs<K, V> {
    fn default() -> Self {
        Subs::Small(Vec::new())
    }
}

/// Push without the vector's doubling: the small vectors here (and a session's filters) stay at
/// most 16 long, so growing by one costs little and leaves no spare slots.
pub(crate) fn push_exact<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(1);
    }
    v.push(x);
}

impl<K: Copy + Eq + Hash, V> Subs<K, V> {
    const SMALL: usize = 16;

    pub(crate) fn insert(&mut self, id: K, value: V) -> Option<V> {
        match self {
            Subs::One(k, v) if *k == id => return Some(std::mem::replace(v, value)),
            Subs::One(..) => {
                let Subs::One(k, v) = std::mem::take(self) else {
                    unreachable!("matched One")
                };
                *self = Subs::Small(vec![(k, v), (id, value)]);
                return None;
            }
            Subs::Small(v) if v.is_empty() => {
                *self = Subs::One(id, value);
                return None;
            }
            Subs::Small(v) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == id) {
                    return Some(std::mem::replace(&mut slot.1, value));
                }
                if v.len() < Self::SMALL {
                    push_exact(v, (id, value));
                    return None;
                }
            }
            Subs::Large(m) => return m.insert(id, value),
        }
        let Subs::Small(v) = std::mem::take(self) else {
            unreachable!("a full Small")
        };
        let mut m: HashMap<K, V> = v.into_iter().collect();
        m.insert(id, value);
        *self = Subs::Large(Box::new(m));
        None
    }

    pub(crate) fn remove(&mut self, id: K) -> Option<V> {
        match self {
            Subs::One(k, _) if *k == id => match std::mem::take(self) {
                Subs::One(_, v) => Some(v),
                _ => unreachable!("matched One"),
            },
            Subs::One(..) => None,
            Subs::Small(v) => {
                let i = v.iter().position(|(k, _)| *k == id)?;
                Some(v.swap_remove(i).1)
            }
            Subs::Large(m) => {
                let r = m.remove(&id);
                if m.is_empty() {
                    *self = Subs::default();
                }
                r
            }
        }
    }

    pub(crate) fn get(&self, id: K) -> Option<&V> {
        match self {
            Subs::One(k, v) => (*k == id).then_some(v),
            Subs::Small(v) => v.iter().find(|(k, _)| *k == id).map(|(_, x)| x),
            Subs::Large(m) => m.get(&id),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Subs::One(..) => false,
            Subs::Small(v) => v.is_empty(),
            Subs::Large(m) => m.is_empty(),
        }
    }

    #[inline]
    pub(crate) fn for_each(&self, f: &mut impl FnMut(K, &V)) {
        match self {
            Subs::One(k, v) => f(*k, v),
            Subs::Small(v) => v.iter().for_each(|(k, x)| f(*k, x)),
            Subs::Large(m) => m.iter().for_each(|(k, x)| f(*k, x)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_matcher_spec_examples() {
        // MQTT 3.1.1 / 5.0 section 4.7.1.2
        for t in ["sport/tennis/player1", "sport/tennis/player1/ranking"] {
            assert!(filter_matches("sport/tennis/player1/#", t), "{t}");
        }
        assert!(filter_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(filter_matches("sport/#", "sport"));
        assert!(filter_matches("#", "sport/tennis"));
        // 4.7.1.3
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!filter_matches(
            "sport/tennis/+",
            "sport/tennis/player1/ranking"
        ));
        assert!(!filter_matches("sport/+", "sport"));
        assert!(filter_matches("sport/+", "sport/"));
        assert!(filter_matches("+/+", "/finance"));
        assert!(filter_matches("/+", "/finance"));
        assert!(!filter_matches("+", "/finance"));
        // 4.7.2
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(filter_matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(filter_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // Empty levels
        assert!(filter_matches("a//b", "a//b"));
        assert!(filter_matches("a/+/b", "a//b"));
        assert!(!filter_matches("a/b", "a//b"));
        // `#` not last is a literal level here (validation refuses it earlier).
        assert!(!filter_matches("#/a", "x/a"));
    }

    #[test]
    fn levels_short_inline_long_boxed() {
        assert_eq!(std::mem::size_of::<Level>(), 16);
        for s in ["", "a", "1234567", "12345678", "é/x", "sensor-temperature"] {
            let l = Level::new(s);
            assert!(l.is(s) && l.as_str() == s, "{s}");
            assert_eq!(matches!(l, Level::Short(..)), s.len() <= 7, "{s}");
            assert!(!l.is("other") && !l.is(&s[..s.len().saturating_sub(1)]) || s.is_empty());
        }
        // Looked up by `&str` in the large map: hashed alike.
        let mut m: HashMap<Level, u8> = HashMap::new();
        m.insert(Level::new("abc"), 1);
        m.insert(Level::new("abcdefghij"), 2);
        assert_eq!(
            (m.get("abc"), m.get("abcdefghij"), m.get("ab")),
            (Some(&1), Some(&2), None)
        );
    }

    #[test]
    fn level_map_grows_and_shrinks() {
        let mut m: LevelMap<u32> = LevelMap::default();
        for i in 0..20u32 {
            *m.get_or_insert_with(&i.to_string(), || 0) += i;
        }
        assert!(matches!(m, LevelMap::Large(_)));
        for i in 0..20u32 {
            assert_eq!(m.get(&i.to_string()), Some(&i));
        }
        for i in 0..20u32 {
            assert_eq!(m.remove(&i.to_string()), Some(i));
        }
        assert!(m.is_empty());
        assert!(m.get("0").is_none());
    }

    #[test]
    fn subs_grow_and_shrink() {
        let mut s: Subs<u64, u64> = Subs::default();
        assert_eq!(s.insert(0, 0), None);
        assert!(matches!(s, Subs::One(0, 0)));
        assert_eq!(s.insert(0, 1), Some(0));
        assert_eq!(
            (s.remove(5), s.remove(0), s.remove(0)),
            (None, Some(1), None)
        );
        assert!(s.is_empty());
        for i in 0..40 {
            assert_eq!(s.insert(i, i * 2), None);
            assert_eq!(s.get(i), Some(&(i * 2)));
        }
        assert!(matches!(s, Subs::Large(_)));
        assert_eq!(s.insert(3, 7), Some(6));
        let mut n = 0;
        s.for_each(&mut |_, _| n += 1);
        assert_eq!(n, 40);
        for i in 0..40 {
            assert!(s.remove(i).is_some());
        }
        assert!(s.is_empty());
    }
}
