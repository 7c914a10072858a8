//! Shared subscriptions: `$share/{group}/{filter}` (MQTT 5.0 section 4.8.2).
//!
//! Each (group name, filter) pair is one group with its own members; a message matching the
//! filter goes to one member of the group, chosen round-robin. Members are arbitrary `Copy` keys
//! (a session on any worker). Groups are indexed in a [`SubscriptionTrie`] by filter, so matching
//! a topic yields each matching group exactly once; the caller then calls
//! [`SharedSubscriptions::pick`] (or [`pick_where`](SharedSubscriptions::pick_where), to skip
//! members that are unusable, or [`pick_online`](SharedSubscriptions::pick_online), which
//! passes over members marked offline while the group has an online one).
use std::hash::Hash;

use hashbrown::{HashMap, HashSet};
use slab::Slab;

use super::levels::TooDeep;
use super::trie::SubscriptionTrie;

/// A shared subscription group (one (group name, filter) pair). Valid until the group's last
/// member leaves; ids of removed groups are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

#[derive(Debug)]
struct Group<M, V> {
    name: Box<str>,
    filter: Box<str>,
    members: Vec<(M, V)>,
    /// Index of the member to try first on the next pick.
    next: usize,
}

impl<M: Copy, V> Group<M, V> {
    /// The index of the next member from `next` on, round-robin, that satisfies `usable`
    /// (each member is tried at most once); the rotation moves past it.
    fn next_index(&mut self, mut usable: impl FnMut(&M, &V) -> bool) -> Option<usize> {
        let n = self.members.len();
        let i = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| usable(&self.members[i].0, &self.members[i].1))?;
        self.next = (i + 1) % n;
        Some(i)
    }

    fn member(&self, i: usize) -> (M, &V) {
        let (m, v) = &self.members[i];
        (*m, v)
    }
}

/// (group, filter) -> members, with round-robin selection.
#[derive(Debug)]
pub struct SharedSubscriptions<M, V> {
    groups: Slab<Group<M, V>>,
    by_name: HashMap<(Box<str>, Box<str>), GroupId>,
    trie: SubscriptionTrie<GroupId, ()>,
    members: usize,
    /// Members marked offline (`set_offline`): passed over while a group has another member.
    offline: HashSet<M>,
}

impl<M, V> Default for SharedSubscriptions<M, V> {
    fn default() -> Self {
        SharedSubscriptions {
            groups: Slab::new(),
            by_name: HashMap::new(),
            trie: SubscriptionTrie::default(),
            members: 0,
            offline: HashSet::new(),
        }
    }
}

impl<M: Copy + Eq, V> SharedSubscriptions<M, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `member` to group `group` of `filter` (from `$share/{group}/{filter}`), or replaces
    /// its value if it is already a member. Returns the group and the replaced value.
    pub fn subscribe(
        &mut self,
        group: &str,
        filter: &str,
        member: M,
        value: V,
    ) -> Result<(GroupId, Option<V>), TooDeep> {
        let key: (Box<str>, Box<str>) = (group.into(), filter.into());
        let id = match self.by_name.get(&key) {
            Some(&id) => id,
            None => {
                let entry = self.groups.vacant_entry();
                // A slab index: far below u32::MAX for any group count that fits in memory.
                let id = GroupId(entry.key() as u32);
                self.trie.insert(filter, id, ())?;
                entry.insert(Group {
                    name: key.0.clone(),
                    filter: key.1.clone(),
                    members: Vec::new(),
                    next: 0,
                });
                self.by_name.insert(key, id);
                id
            }
        };
        let g = &mut self.groups[id.0 as usize];
        if let Some(slot) = g.members.iter_mut().find(|(m, _)| *m == member) {
            return Ok((id, Some(std::mem::replace(&mut slot.1, value))));
        }
        g.members.push((member, value));
        self.members += 1;
        Ok((id, None))
    }

    /// Removes `member` from group `group` of `filter`. The group disappears with its last member.
    pub fn unsubscribe(&mut self, group: &str, filter: &str, member: M) -> Option<V> {
        let key: (Box<str>, Box<str>) = (group.into(), filter.into());
        let id = *self.by_name.get(&key)?;
        let g = &mut self.groups[id.0 as usize];
        let i = g.members.iter().position(|(m, _)| *m == member)?;
        // `remove` keeps the rotation order of the others.
        let (_, v) = g.members.remove(i);
        if i < g.next {
            g.next -= 1;
        }
        self.members -= 1;
        if g.members.is_empty() {
            self.groups.remove(id.0 as usize);
            self.by_name.remove(&key);
            self.trie.remove(filter, id);
        }
        Some(v)
    }

    /// Calls `f` once for every group whose filter matches `topic`. Allocates nothing.
    pub fn matches(&self, topic: &str, mut f: impl FnMut(GroupId)) {
        self.trie.matches(topic, |id, _| f(id));
    }

    /// The next member of `group`, round-robin. `None` for an unknown (removed) group.
    pub fn pick(&mut self, group: GroupId) -> Option<(M, &V)> {
        self.pick_where(group, |_, _| true)
    }

    /// The next member of `group`, round-robin, that satisfies `usable` (e.g. online, queue not
    /// full); each member is tried at most once. `None` when no member is usable.
    pub fn pick_where(
        &mut self,
        group: GroupId,
        mut usable: impl FnMut(M, &V) -> bool,
    ) -> Option<(M, &V)> {
        let g = self.groups.get_mut(group.0 as usize)?;
        let i = g.next_index(|m, v| usable(*m, v))?;
        Some(g.member(i))
    }

    /// Members of a group, in rotation order.
    pub fn members(&self, group: GroupId) -> &[(M, V)] {
        self.groups
            .get(group.0 as usize)
            .map_or(&[], |g| g.members.as_slice())
    }

    /// Whether `member` is in the group `group` of `filter`.
    pub fn has_member(&self, group: &str, filter: &str, member: M) -> bool {
        self.group(group, filter)
            .is_some_and(|g| self.members(g).iter().any(|m| m.0 == member))
    }

    /// Group name and filter of a group.
    pub fn describe(&self, group: GroupId) -> Option<(&str, &str)> {
        self.groups
            .get(group.0 as usize)
            .map(|g| (&*g.name, &*g.filter))
    }

    /// Looks a group up by name and filter.
    pub fn group(&self, group: &str, filter: &str) -> Option<GroupId> {
        self.by_name
            .get(&(Box::<str>::from(group), Box::<str>::from(filter)))
            .copied()
    }

    /// Number of groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Number of (group, filter, member) subscriptions.
    pub fn len(&self) -> usize {
        self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members == 0
    }
}

impl<M: Copy + Eq + Hash, V> SharedSubscriptions<M, V> {
    /// Marks `member` offline (its session is kept without a connection) or online again.
    /// An offline member keeps its memberships but is picked only when every member of the
    /// group is offline (its session then queues the message).
    pub fn set_offline(&mut self, member: M, offline: bool) {
        if offline {
            self.offline.insert(member);
        } else {
            self.offline.remove(&member);
        }
    }

    /// The next member of `group`, round-robin, passing over offline members unless they are
    /// all offline. `None` for an unknown (removed) group.
    pub fn pick_online(&mut self, group: GroupId) -> Option<(M, &V)> {
        self.pick_online_where(group, |_| true)
    }

    /// As [`Self::pick_online`], among the members that satisfy `usable` only.
    pub fn pick_online_where(
        &mut self,
        group: GroupId,
        mut usable: impl FnMut(M) -> bool,
    ) -> Option<(M, &V)> {
        let offline = &self.offline;
        let g = self.groups.get_mut(group.0 as usize)?;
        let i = g
            .next_index(|m, _| usable(*m) && !offline.contains(m))
            .or_else(|| g.next_index(|m, _| usable(*m)))?;
        Some(g.member(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_online_passes_over_offline_members_until_all_are_offline() {
        let mut s: SharedSubscriptions<u32, u8> = SharedSubscriptions::new();
        let (g, _) = s.subscribe("g", "t", 1, 0).unwrap();
        for m in [2, 3] {
            s.subscribe("g", "t", m, 0).unwrap();
        }
        s.set_offline(2, true);
        let picks: Vec<u32> = (0..4).map(|_| s.pick_online(g).unwrap().0).collect();
        assert_eq!(picks, vec![1, 3, 1, 3]);
        // All offline: round-robin over all of them (their sessions queue).
        s.set_offline(1, true);
        s.set_offline(3, true);
        let picks: Vec<u32> = (0..3).map(|_| s.pick_online(g).unwrap().0).collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3], "{picks:?}");
        // Back online.
        s.set_offline(2, false);
        assert_eq!(s.pick_online(g).unwrap().0, 2);
        assert_eq!(s.pick_online(g).unwrap().0, 2);
        s.unsubscribe("g", "t", 1);
        s.unsubscribe("g", "t", 2);
        s.unsubscribe("g", "t", 3);
        assert!(s.pick_online(g).is_none());
    }

    #[test]
    fn each_matching_group_once_and_round_robin() {
        let mut s: SharedSubscriptions<u32, u8> = SharedSubscriptions::new();
        let (g1, r) = s.subscribe("g", "sensors/+/temp", 1, 0).unwrap();
        assert_eq!(r, None);
        assert_eq!(
            s.subscribe("g", "sensors/+/temp", 2, 0).unwrap(),
            (g1, None)
        );
        assert_eq!(
            s.subscribe("g", "sensors/+/temp", 3, 0).unwrap(),
            (g1, None)
        );
        assert_eq!(
            s.subscribe("g", "sensors/+/temp", 3, 1).unwrap(),
            (g1, Some(0))
        );
        let (g2, _) = s.subscribe("h", "sensors/+/temp", 1, 0).unwrap();
        let (g3, _) = s.subscribe("g", "sensors/#", 9, 0).unwrap();
        assert_ne!(g1, g2);
        assert_ne!(g1, g3);
        assert_eq!(s.group_count(), 3);
        assert_eq!(s.len(), 5);
        let mut got = Vec::new();
        s.matches("sensors/k/temp", |g| got.push(g));
        got.sort_unstable();
        let mut want = vec![g1, g2, g3];
        want.sort_unstable();
        assert_eq!(got, want);
        // Round robin over 1, 2, 3.
        let picks: Vec<u32> = (0..7).map(|_| s.pick(g1).unwrap().0).collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(s.pick(g3).unwrap().0, 9);
        assert_eq!(s.describe(g1), Some(("g", "sensors/+/temp")));
        assert_eq!(s.group("h", "sensors/+/temp"), Some(g2));
        // $ rule applies to the inner filter.
        let mut n = 0;
        s.matches("$sensors/k/temp", |_| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn pick_where_skips_unusable_members() {
        let mut s: SharedSubscriptions<u32, ()> = SharedSubscriptions::new();
        let (g, _) = s.subscribe("g", "t", 1, ()).unwrap();
        s.subscribe("g", "t", 2, ()).unwrap();
        s.subscribe("g", "t", 3, ()).unwrap();
        let picks: Vec<u32> = (0..4)
            .map(|_| s.pick_where(g, |m, _| m != 2).unwrap().0)
            .collect();
        assert_eq!(picks, vec![1, 3, 1, 3]);
        assert!(s.pick_where(g, |_, _| false).is_none());
    }

    #[test]
    fn unsubscribe_keeps_rotation_and_drops_empty_groups() {
        let mut s: SharedSubscriptions<u32, ()> = SharedSubscriptions::new();
        let (g, _) = s.subscribe("g", "a/b", 1, ()).unwrap();
        s.subscribe("g", "a/b", 2, ()).unwrap();
        s.subscribe("g", "a/b", 3, ()).unwrap();
        assert_eq!(s.pick(g).unwrap().0, 1);
        assert_eq!(s.pick(g).unwrap().0, 2);
        // Next would be 3; removing 1 (before it) must not skip 3.
        assert_eq!(s.unsubscribe("g", "a/b", 1), Some(()));
        assert_eq!(s.pick(g).unwrap().0, 3);
        assert_eq!(s.pick(g).unwrap().0, 2);
        assert_eq!(s.unsubscribe("g", "a/b", 1), None);
        assert_eq!(s.unsubscribe("x", "a/b", 2), None);
        assert_eq!(s.unsubscribe("g", "a/b", 2), Some(()));
        assert_eq!(s.unsubscribe("g", "a/b", 3), Some(()));
        assert!(s.is_empty());
        assert_eq!(s.group_count(), 0);
        assert!(s.pick(g).is_none());
        let mut n = 0;
        s.matches("a/b", |_| n += 1);
        assert_eq!(n, 0);
        assert!(s.trie.is_empty());
    }
}
