//! Hashed timing wheel (Varghese & Lauck, scheme 6), one per worker, single-threaded, no I/O.
//!
//! Time is cut into ticks of `tick` starting at `start`. The wheel has `slots` slots (rounded up
//! to a power of two); a key whose deadline falls in absolute tick `t` lives in slot
//! `t % slots`. Each entry records its absolute expiry tick, which plays the role of scheme 6's
//! "rounds" counter: when the wheel visits a slot it fires only the entries whose tick has been
//! reached, and entries that belong to a later rotation stay where they are.
//!
//! # Guarantees
//!
//! - A deadline is rounded **up** to the next tick boundary, so a key never fires before its
//!   deadline. If [`TimerWheel::advance`] is called at least once per tick, a key fires at most
//!   one tick (plus the caller's own scheduling delay) after its deadline.
//! - [`TimerWheel::insert`] is O(1). Slots are `Vec`s that keep a small capacity
//!   ([`SLOT_KEEP`] entries, or twice what is left in them) when visited: a burst of timers due
//!   in one tick grows its slot, and the slot gives the memory back once they have fired. So
//!   the wheel's memory follows the timers it holds, not the largest burst every slot has ever
//!   seen (clustered deadlines, e.g. many clients pinging in step, reach every slot over the
//!   rotations: without the trim, a 50,000-connection soak grew the wheels by several MiB a
//!   minute). A slot that gets a burst every rotation reallocates a few times per rotation.
//! - [`TimerWheel::advance`] visits each slot at most once per call, however long the gap since
//!   the previous call: after a long stall (or a suspended process) it does
//!   `O(min(gap_ticks, slots) + entries visited)` work, never one step per missed tick.
//! - Expiry is batched: at most `max` keys come out per call; the rest stay in the wheel and
//!   come out on the next call (the return value says whether some are known to remain). A
//!   network blip that expires a whole slot of connections therefore cannot stall the worker.
//!
//! # Intended use: lazy reset
//!
//! The wheel has no `remove` and no `reset`, on purpose. As in FlashMQ, the owner of a timer
//! (a connection) stores its *real* deadline itself, and inserts a key into the wheel only when
//! it has no key there yet. Resetting the keep-alive on every packet is then just a store to the
//! connection's own `deadline` field: it costs nothing in the wheel. When a key fires, the caller
//! looks up the connection and compares:
//!
//! ```text
//! for key in fired {
//!     match conns.get(key) {                       // key = (slot, generation)
//!         None => {}                                // stale key: connection gone, ignore
//!         Some(c) if c.deadline > now => wheel.insert(key, c.deadline), // moved: re-arm
//!         Some(c) => expire(c),                     // really expired
//!     }
//! }
//! ```
//!
//! Keys should carry a generation (e.g. `ConnId { slot, generation }`) so that a key left in the
//! wheel by a connection that has since closed, and whose slot was reused, is recognised as stale.
//! The wheel does not dedupe: inserting a key twice makes it fire twice.
use std::time::{Duration, Instant};

/// Capacity (in entries) a slot may keep after a visit whatever its length (see the module
/// documentation); above it, a visited slot keeps at most twice its remaining length.
pub const SLOT_KEEP: usize = 16;

/// Give back the spare capacity a burst left in `v` (hysteresis: only when at most a quarter is
/// used, down to twice the length).
fn trim<T>(v: &mut Vec<T>) {
    if v.capacity() > SLOT_KEEP && v.len() * 4 <= v.capacity() {
        v.shrink_to((v.len() * 2).max(SLOT_KEEP));
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry<K> {
    key: K,
    /// Absolute expiry tick (deadline rounded up to a tick boundary).
    tick: u64,
}

/// A hashed timing wheel. See the module documentation.
#[derive(Debug)]
pub struct TimerWheel<K: Copy> {
    start: Instant,
    tick_ns: u64,
    mask: u64,
    slots: Vec<Vec<Entry<K>>>,
    /// The next tick to process: every tick `< cur` has been fully processed.
    cur: u64,
    /// Keys inserted with a deadline in an already processed tick: due at the next advance.
    overdue: Vec<K>,
    len: usize,
    /// Slot visits done by `advance` (tests check that long gaps are jumped).
    #[cfg(test)]
    visits: u64,
}

impl<K: Copy> TimerWheel<K> {
    /// A wheel whose tick 0 starts at `start`, with ticks of `tick` (at least 1 ns) and `slots`
    /// slots (at least 1, rounded up to a power of two).
    pub fn new(start: Instant, tick: Duration, slots: usize) -> Self {
        let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
        let n = slots.max(1).checked_next_power_of_two().unwrap_or(1 << 30);
        TimerWheel {
            start,
            tick_ns,
            mask: (n - 1) as u64,
            slots: (0..n).map(|_| Vec::new()).collect(),
            cur: 0,
            overdue: Vec::new(),
            len: 0,
            #[cfg(test)]
            visits: 0,
        }
    }

    /// Tick duration.
    pub fn tick(&self) -> Duration {
        Duration::from_nanos(self.tick_ns)
    }

    /// Number of slots (a power of two).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    fn offset_ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The tick at which `deadline` is due (rounded up).
    fn ceil_tick(&self, deadline: Instant) -> u64 {
        let ns = self.offset_ns(deadline);
        ns.div_ceil(self.tick_ns)
    }

    /// The last tick boundary reached at `now` (rounded down).
    fn floor_tick(&self, now: Instant) -> u64 {
        self.offset_ns(now) / self.tick_ns
    }

    /// The instant at which absolute tick `t` begins.
    fn tick_instant(&self, t: u64) -> Instant {
        // Saturate instead of panicking far in the future.
        let ns = t.saturating_mul(self.tick_ns);
        self.start
            .checked_add(Duration::from_nanos(ns))
            .unwrap_or(self.start + Duration::from_secs(u32::MAX as u64))
    }

    /// Schedule `key` at `deadline`, rounded up to the next tick (never early). A deadline that
    /// is already past fires on the next [`advance`](Self::advance). O(1); allocates only when a
    /// slot's `Vec` must grow beyond any size it had before.
    pub fn insert(&mut self, key: K, deadline: Instant) {
        let tick = self.ceil_tick(deadline);
        if tick < self.cur {
            self.overdue.push(key);
        } else {
            let slot = (tick & self.mask) as usize;
            self.slots[slot].push(Entry { key, tick });
        }
        self.len += 1;
    }

    /// Advance the wheel to `now`. Every key whose deadline is `<= now` (after rounding up to a
    /// tick) is pushed into `out`, at most `max` of them per call. Returns `true` when the call
    /// stopped because of `max` and more keys may be due: call again (possibly with the same
    /// `now`) to get them. Entries due in a later rotation stay in the wheel.
    ///
    /// Time never goes back: a `now` earlier than a previous call's is treated as that call's.
    pub fn advance(&mut self, now: Instant, max: usize, out: &mut Vec<K>) -> bool {
        let mut emitted = 0usize;
        while let Some(&key) = self.overdue.last() {
            if emitted == max {
                return true;
            }
            self.overdue.pop();
            out.push(key);
            self.len -= 1;
            emitted += 1;
        }
        trim(&mut self.overdue);
        let target = self.floor_tick(now);
        if target < self.cur {
            return false;
        }
        // Each slot needs at most one visit: a visit fires every entry whose tick is <= target,
        // whichever rotation it belongs to. So never walk more than one rotation of ticks.
        let nslots = self.slots.len() as u64;
        if target - self.cur >= nslots {
            self.cur = target + 1 - nslots;
        }
        while self.cur <= target {
            if self.len == 0 {
                // Nothing anywhere (the overdue list is empty here): jump straight to the end.
                self.cur = target + 1;
                break;
            }
            #[cfg(test)]
            {
                self.visits += 1;
            }
            let slot = &mut self.slots[(self.cur & self.mask) as usize];
            // Scan backwards so swap_remove only moves already-examined entries.
            let mut i = slot.len();
            while i > 0 {
                i -= 1;
                if slot[i].tick <= target {
                    if emitted == max {
                        return true;
                    }
                    out.push(slot.swap_remove(i).key);
                    self.len -= 1;
                    emitted += 1;
                }
            }
            trim(slot);
            self.cur += 1;
        }
        false
    }

    /// Number of keys in the wheel (including stale ones the caller will ignore).
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when no key is in the wheel.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The earliest tick boundary at which some key in the wheel is due (a key's deadline rounded
    /// up), or `None` when the wheel is empty. Use it to bound a sleep. Cheap when something is
    /// due within the current rotation (stops at the first such slot); O(slots + entries) when
    /// every key is in a later rotation.
    pub fn next_deadline_hint(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        if !self.overdue.is_empty() {
            // Due at the next advance: the last processed tick.
            return Some(self.tick_instant(self.cur.saturating_sub(1)));
        }
        let n = self.slots.len() as u64;
        let mut best: Option<u64> = None;
        for k in 0..n {
            let t = self.cur + k;
            let slot = &self.slots[(t & self.mask) as usize];
            if slot.is_empty() {
                continue;
            }
            // Earliest entry of this slot (every entry's tick is >= t: ticks < cur go to the
            // overdue list).
            let due = slot.iter().map(|e| e.tick).min().unwrap_or(t);
            if due == t {
                return Some(self.tick_instant(t));
            }
            best = Some(best.map_or(due, |b: u64| b.min(due)));
        }
        best.map(|t| self.tick_instant(t))
    }

    /// Sum of the capacities of the slot vectors (for tests of the no-allocation property).
    #[doc(hidden)]
    pub fn capacity(&self) -> usize {
        self.slots.iter().map(Vec::capacity).sum::<usize>() + self.overdue.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn wheel(slots: usize) -> (Instant, TimerWheel<u32>) {
        let t0 = Instant::now();
        (t0, TimerWheel::new(t0, 10 * MS, slots))
    }

    fn drain(w: &mut TimerWheel<u32>, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        // Bounded: each call emits at least one key when it returns true.
        for _ in 0..1_000_000 {
            if !w.advance(now, 1000, &mut out) {
                break;
            }
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn never_early_and_within_one_tick() {
        // Fake clock: step 1 ms at a time over 3 s, tick 10 ms, 64 slots (so several rotations).
        let (t0, mut w) = wheel(64);
        let deadlines: Vec<Duration> = (0..200u32)
            .map(|i| Duration::from_micros(u64::from(i) * 13_337 + 1))
            .collect();
        for (i, d) in deadlines.iter().enumerate() {
            w.insert(i as u32, t0 + *d);
        }
        let mut fired_at: Vec<Option<Duration>> = vec![None; deadlines.len()];
        let mut out = Vec::new();
        for step in 0..=3_000u64 {
            let now = Duration::from_millis(step);
            out.clear();
            assert!(!w.advance(t0 + now, usize::MAX, &mut out));
            for &k in &out {
                assert!(fired_at[k as usize].is_none(), "key {k} fired twice");
                fired_at[k as usize] = Some(now);
            }
        }
        for (i, d) in deadlines.iter().enumerate() {
            let f = fired_at[i].unwrap_or_else(|| panic!("key {i} never fired"));
            assert!(f >= *d, "key {i} fired early: {f:?} < {d:?}");
            // Within one tick after the deadline (plus one clock step of the fake clock).
            assert!(f < *d + 10 * MS + MS, "key {i} fired late: {f:?} for {d:?}");
        }
        assert!(w.is_empty());
    }

    #[test]
    fn exact_tick_boundary_fires_at_boundary() {
        let (t0, mut w) = wheel(8);
        w.insert(1, t0 + 30 * MS);
        let mut out = Vec::new();
        w.advance(t0 + 29 * MS, 10, &mut out);
        assert!(out.is_empty());
        w.advance(t0 + 30 * MS, 10, &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn past_deadline_fires_on_next_advance() {
        let (t0, mut w) = wheel(8);
        let mut out = Vec::new();
        w.advance(t0 + 500 * MS, 10, &mut out);
        w.insert(7, t0 + 5 * MS); // already past
        w.insert(8, t0); // already past
        w.advance(t0 + 500 * MS, 10, &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![7, 8]);
    }

    #[test]
    fn deadlines_beyond_one_rotation_wait_for_their_round() {
        // 8 slots of 10 ms = 80 ms per rotation.
        let (t0, mut w) = wheel(8);
        w.insert(1, t0 + 20 * MS); // rotation 0, slot 2
        w.insert(2, t0 + 100 * MS); // rotation 1, slot 2
        w.insert(3, t0 + 1_620 * MS); // rotation 20, slot 2
        let mut fired = Vec::new();
        let mut out = Vec::new();
        for step in 0..=200u64 {
            out.clear();
            w.advance(t0 + Duration::from_millis(step * 10), usize::MAX, &mut out);
            for &k in &out {
                fired.push((k, step * 10));
            }
        }
        assert_eq!(fired, vec![(1, 20), (2, 100), (3, 1620)]);
    }

    #[test]
    fn batching_with_max() {
        let (t0, mut w) = wheel(16);
        for k in 0..10 {
            w.insert(k, t0 + 10 * MS);
        }
        for k in 10..15 {
            w.insert(k, t0 + 40 * MS);
        }
        w.insert(99, t0 + 10_000 * MS);
        let mut out = Vec::new();
        let now = t0 + 50 * MS;
        assert!(w.advance(now, 4, &mut out));
        assert_eq!(out.len(), 4);
        assert!(w.advance(now, 4, &mut out));
        assert_eq!(out.len(), 8);
        assert!(w.advance(now, 4, &mut out));
        assert_eq!(out.len(), 12);
        // Three left: fits, nothing more pending.
        assert!(!w.advance(now, 4, &mut out));
        assert_eq!(out.len(), 15);
        out.sort_unstable();
        assert_eq!(out, (0..15).collect::<Vec<_>>());
        assert_eq!(w.len(), 1);
        // max = 0 emits nothing but reports pending work.
        let mut none = Vec::new();
        assert!(w.advance(t0 + 20_000 * MS, 0, &mut none));
        assert!(none.is_empty());
        assert!(!w.advance(t0 + 20_000 * MS, 1, &mut none));
        assert_eq!(none, vec![99]);
    }

    #[test]
    fn many_keys_in_one_slot() {
        // 4 slots: keys spread over many rotations all hash into the same few slots.
        let (t0, mut w) = wheel(4);
        for k in 0..5_000u32 {
            // All in slot 1: ticks 1, 5, 9, ...
            w.insert(
                k,
                t0 + Duration::from_millis((1 + 4 * u64::from(k % 50)) * 10),
            );
        }
        let mut out = Vec::new();
        // At tick 21 (210 ms): rounds for ticks 1,5,...,21 are due: k%50 in 0..=5.
        while w.advance(t0 + 210 * MS, 100, &mut out) {}
        let expected: Vec<u32> = (0..5_000).filter(|k| k % 50 <= 5).collect();
        out.sort_unstable();
        assert_eq!(out, expected);
        assert_eq!(w.len(), 5_000 - expected.len());
        let rest = drain(&mut w, t0 + 10_000 * MS);
        let expected_rest: Vec<u32> = (0..5_000).filter(|k| k % 50 > 5).collect();
        assert_eq!(rest, expected_rest);
    }

    #[test]
    fn long_gap_jumps_instead_of_walking_every_tick() {
        // 1 ns ticks: a gap of 10^15 ticks (11.5 days) would never finish if walked tick by
        // tick. The advance must visit each of the 256 slots at most once.
        let t0 = Instant::now();
        let mut w: TimerWheel<u32> = TimerWheel::new(t0, Duration::from_nanos(1), 256);
        let far = Duration::from_secs(1_000_000);
        for k in 0..1000u32 {
            w.insert(k, t0 + Duration::from_nanos(u64::from(k) * 7919));
        }
        w.insert(5000, t0 + far + far); // beyond the gap
        let got = drain(&mut w, t0 + far);
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert!(w.visits <= 256, "visited {} slots", w.visits);
        assert_eq!(w.len(), 1);
        assert_eq!(drain(&mut w, t0 + far + far), vec![5000]);
        assert!(w.visits <= 512, "visited {} slots", w.visits);
        // Nothing left: a further huge advance is immediate.
        let mut out = Vec::new();
        assert!(!w.advance(t0 + far * 4, 10, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn time_does_not_go_back() {
        let (t0, mut w) = wheel(8);
        let mut out = Vec::new();
        w.advance(t0 + 100 * MS, 10, &mut out);
        w.insert(1, t0 + 150 * MS);
        w.advance(t0 + 50 * MS, 10, &mut out);
        assert!(out.is_empty());
        w.advance(t0 + 150 * MS, 10, &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn lazy_reset_pattern() {
        // Connection 0 resets its deadline on every "packet"; the wheel holds one key for it.
        let (t0, mut w) = wheel(32);
        let keepalive = 100 * MS;
        let mut deadline = t0 + keepalive;
        w.insert(0u32, deadline);
        let mut expired_at = None;
        let mut out = Vec::new();
        for step in 0..=1000u64 {
            let now = t0 + Duration::from_millis(step);
            if step < 500 && step % 30 == 0 {
                deadline = now + keepalive; // reset: no wheel operation
            }
            out.clear();
            w.advance(now, 16, &mut out);
            for _ in out.drain(..) {
                if deadline > now {
                    w.insert(0, deadline);
                } else {
                    assert!(expired_at.is_none());
                    expired_at = Some(step);
                }
            }
            assert!(w.len() <= 1);
        }
        // Last reset at step 480 -> deadline 580; fires within one tick (10 ms).
        let at = expired_at.expect("never expired");
        assert!((580..590).contains(&at), "expired at {at}");
    }

    #[test]
    fn steady_state_keeps_capacity() {
        let (t0, mut w) = wheel(16);
        let mut out = Vec::new();
        let mut now = t0;
        for k in 0..1000u32 {
            w.insert(k, now + Duration::from_millis(u64::from(k % 160)));
        }
        while w.advance(now + 200 * MS, usize::MAX, &mut out) {}
        let mut cap = w.capacity();
        assert!(cap >= 1000 / 16);
        // Same load again, shifted by whole rotations (part of it lands in already processed
        // ticks, i.e. the overdue list): after one warm-up round the capacity must not change.
        for round in 0..6 {
            now += 160 * MS;
            for k in 0..1000u32 {
                w.insert(k, now + Duration::from_millis(u64::from(k % 160)));
            }
            out.clear();
            while w.advance(now + 200 * MS, usize::MAX, &mut out) {}
            assert_eq!(out.len(), 1000);
            if round == 0 {
                cap = w.capacity();
            } else {
                assert_eq!(w.capacity(), cap);
            }
        }
    }

    /// Clustered deadlines (many clients pinged in the same sweep) land in one slot at a time,
    /// and over the rotations every slot gets such a burst. Once a burst has fired its slot must
    /// give the memory back: the capacity follows the live timers, not slots x largest burst.
    #[test]
    fn bursts_do_not_leave_slots_oversized() {
        let (t0, mut w) = wheel(64);
        let mut out = Vec::new();
        for r in 0..(4 * 64u64) {
            let now = t0 + Duration::from_millis(r * 10);
            // 1000 timers due together three ticks ahead: a different slot every round.
            for k in 0..1000u32 {
                w.insert(k, now + 30 * MS);
            }
            out.clear();
            while w.advance(now, usize::MAX, &mut out) {}
            if r >= 3 {
                assert_eq!(out.len(), 1000);
            }
            // Live: the bursts of the next three ticks (1024 each at most) + trimmed slots.
            assert!(
                w.capacity() <= 3 * 1024 + 64 * SLOT_KEEP,
                "capacity {}",
                w.capacity()
            );
        }
        out.clear();
        while w.advance(t0 + Duration::from_secs(60), usize::MAX, &mut out) {}
        assert!(w.is_empty());
        // Without the trim every slot would keep room for a whole burst (64 x 1024 entries).
        assert!(
            w.capacity() <= 64 * SLOT_KEEP + SLOT_KEEP,
            "capacity {}",
            w.capacity()
        );
    }

    /// Entries of a later rotation stay in a visited slot; the trim keeps room for them.
    #[test]
    fn trim_keeps_later_rotation_entries() {
        let (t0, mut w) = wheel(8);
        let mut out = Vec::new();
        for k in 0..100u32 {
            w.insert(k, t0 + 30 * MS); // tick 3
        }
        for k in 100..110u32 {
            w.insert(k, t0 + 110 * MS); // tick 11: slot 3 too, next rotation
        }
        w.advance(t0 + 30 * MS, usize::MAX, &mut out);
        assert_eq!(out.len(), 100);
        assert_eq!(w.len(), 10);
        assert!(w.capacity() <= 8 * SLOT_KEEP + SLOT_KEEP);
        out.clear();
        w.advance(t0 + 110 * MS, usize::MAX, &mut out);
        out.sort_unstable();
        assert_eq!(out, (100..110).collect::<Vec<_>>());
    }

    #[test]
    fn next_deadline_hint_is_the_earliest_tick() {
        let (t0, mut w) = wheel(8);
        assert_eq!(w.next_deadline_hint(), None);
        w.insert(1, t0 + 35 * MS); // tick 4
        assert_eq!(w.next_deadline_hint(), Some(t0 + 40 * MS));
        w.insert(2, t0 + 1_000 * MS); // tick 100, slot 4 as well... 100 % 8 = 4
        assert_eq!(w.next_deadline_hint(), Some(t0 + 40 * MS));
        let mut out = Vec::new();
        w.advance(t0 + 40 * MS, 10, &mut out);
        assert_eq!(out, vec![1]);
        assert_eq!(w.next_deadline_hint(), Some(t0 + 1_000 * MS));
        w.insert(3, t0 + 10 * MS); // already past: due at once
        assert_eq!(w.next_deadline_hint(), Some(t0 + 40 * MS));
    }

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert a key due `delay` ms after the current fake time (may be 0).
        Insert(u64),
        /// Move the fake clock forward by `step` ms and advance with at most `max` keys.
        Advance(u64, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..3_000).prop_map(Op::Insert),
            (0u64..400, 0usize..6).prop_map(|(s, m)| Op::Advance(s, m)),
            // Occasionally a long jump over many rotations.
            (10_000u64..100_000, 1usize..50).prop_map(|(s, m)| Op::Advance(s, m)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Against a model: every key fires exactly once, never before its deadline, and once an
        /// advance reports nothing pending, every key due at that tick has fired.
        #[test]
        fn differential_against_model(ops in prop::collection::vec(op(), 1..200), slots in 1usize..40) {
            let t0 = Instant::now();
            let tick = 10 * MS;
            let mut w: TimerWheel<u32> = TimerWheel::new(t0, tick, slots);
            let mut now = Duration::ZERO;
            let mut deadlines: Vec<Duration> = Vec::new();
            let mut fired: Vec<bool> = Vec::new();
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(delay) => {
                        let d = now + Duration::from_millis(delay);
                        w.insert(deadlines.len() as u32, t0 + d);
                        deadlines.push(d);
                        fired.push(false);
                    }
                    Op::Advance(step, max) => {
                        now += Duration::from_millis(step);
                        out.clear();
                        let more = w.advance(t0 + now, max, &mut out);
                        prop_assert!(out.len() <= max);
                        for &k in &out {
                            let k = k as usize;
                            prop_assert!(!fired[k], "key {} fired twice", k);
                            prop_assert!(deadlines[k] <= now, "key {} fired early", k);
                            fired[k] = true;
                        }
                        if !more {
                            // Due = deadline rounded up to a tick is <= now.
                            let tick_ms = 10u128;
                            let now_tick = now.as_millis() / tick_ms;
                            for (k, d) in deadlines.iter().enumerate() {
                                let due_tick = d.as_millis().div_ceil(tick_ms);
                                if due_tick <= now_tick {
                                    prop_assert!(fired[k], "key {} due but not fired", k);
                                }
                            }
                        }
                        let pending = fired.iter().filter(|f| !**f).count();
                        prop_assert_eq!(w.len(), pending);
                    }
                }
            }
        }
    }
}
