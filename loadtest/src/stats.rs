//! Shared counters (live line) and per-thread results merged at the end.

use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Shared {
    pub conns: AtomicI64,
    pub conns_peak: AtomicI64,
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub connack_errors: AtomicU64,
    pub closed: AtomicU64,
    pub reconnects: AtomicU64,
    pub sent: AtomicU64,
    pub late: AtomicU64,
    pub skipped: AtomicU64,
    pub acked: AtomicU64,
    /// PUBACK / PUBREC 0x10 No matching subscribers (MQTT 5).
    pub no_subscribers: AtomicU64,
    /// PUBACK / PUBREC with a failure reason (>= 0x80).
    pub ack_refused: AtomicU64,
    pub recv: AtomicU64,
    pub recv_stamped: AtomicU64,
    pub errors: AtomicU64,
    pub sub_errors: AtomicU64,
    pub subs_ready: AtomicU64,
    pub pubs_up: AtomicU64,
    pub old_up: AtomicU64,
    pub pings: AtomicU64,
    pub pongs: AtomicU64,
    pub disc_8e: AtomicU64,
    pub disc_other: AtomicU64,
    pub old_eof: AtomicU64,
    pub ka_closed: AtomicU64,
    pub wills: AtomicU64,
    /// CLOCK_MONOTONIC ns of the first connect attempt (0 = none yet).
    pub first_connect_ns: AtomicU64,
    /// CLOCK_MONOTONIC ns of the latest successful CONNACK.
    pub last_connack_ns: AtomicU64,
    /// CLOCK_MONOTONIC ns when publishing may start (0 = not yet).
    pub pub_start_ns: AtomicU64,
    /// CLOCK_MONOTONIC ns when publishing must stop.
    pub pub_end_ns: AtomicU64,
    pub phase2: AtomicBool,
    pub stop: AtomicBool,
}

impl Shared {
    pub fn conn_up(&self) {
        let c = self.conns.fetch_add(1, Relaxed) + 1;
        self.conns_peak.fetch_max(c, Relaxed);
        self.connects.fetch_add(1, Relaxed);
    }
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Relaxed)
    }
}

pub fn new_hist() -> Histogram<u64> {
    // 1 us .. 1 hour, 3 significant digits
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Received sequence numbers of one publisher as seen by one receiver group.
#[derive(Default, Clone, Debug)]
pub struct Track {
    pub bits: Vec<u64>,
    pub unique: u64,
    pub dups: u64,
    pub max_seq: Option<u64>,
}

impl Track {
    /// Record `seq`; returns false if it was a duplicate.
    pub fn add(&mut self, seq: u64) -> bool {
        // Bound memory: ignore absurd sequence numbers (not ours / corrupted).
        if seq > 1 << 34 {
            return true;
        }
        let w = (seq / 64) as usize;
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        let m = 1u64 << (seq % 64);
        self.max_seq = Some(self.max_seq.map_or(seq, |x| x.max(seq)));
        if self.bits[w] & m != 0 {
            self.dups += 1;
            false
        } else {
            self.bits[w] |= m;
            self.unique += 1;
            true
        }
    }

    pub fn merge(&mut self, o: &Track) {
        if self.bits.len() < o.bits.len() {
            self.bits.resize(o.bits.len(), 0);
        }
        self.dups += o.dups;
        for (i, w) in o.bits.iter().enumerate() {
            let both = self.bits[i] & w;
            self.dups += both.count_ones() as u64;
            self.unique += (w & !self.bits[i]).count_ones() as u64;
            self.bits[i] |= w;
        }
        self.max_seq = match (self.max_seq, o.max_seq) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Key of a receive stream: (receiver group, publisher id).
pub type StreamKey = (u32, u32);

/// The figures of the clients of one `--host` (a node of a cluster): connections by where
/// they connected, messages sent by its publishers and received by its subscribers.
#[derive(Clone)]
pub struct HostResult {
    pub connects: u64,
    pub connect_errors: u64,
    pub connack_errors: u64,
    pub closed: u64,
    pub sent: u64,
    pub recv: u64,
    /// CLOCK_MONOTONIC ns of its first connect attempt (0 = none).
    pub first_connect_ns: u64,
    /// CLOCK_MONOTONIC ns of its latest successful CONNACK.
    pub last_connack_ns: u64,
    pub connect_lat: Histogram<u64>,
    pub takeover_lat: Histogram<u64>,
    /// Latency of the messages its subscribers received.
    pub lat: Histogram<u64>,
}

impl HostResult {
    pub fn new() -> Self {
        HostResult {
            connects: 0,
            connect_errors: 0,
            connack_errors: 0,
            closed: 0,
            sent: 0,
            recv: 0,
            first_connect_ns: 0,
            last_connack_ns: 0,
            connect_lat: new_hist(),
            takeover_lat: new_hist(),
            lat: new_hist(),
        }
    }

    pub fn merge(&mut self, o: &HostResult) {
        self.connects += o.connects;
        self.connect_errors += o.connect_errors;
        self.connack_errors += o.connack_errors;
        self.closed += o.closed;
        self.sent += o.sent;
        self.recv += o.recv;
        self.first_connect_ns = match (self.first_connect_ns, o.first_connect_ns) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.last_connack_ns = self.last_connack_ns.max(o.last_connack_ns);
        let _ = self.connect_lat.add(&o.connect_lat);
        let _ = self.takeover_lat.add(&o.takeover_lat);
        let _ = self.lat.add(&o.lat);
    }

    /// CONNACKs per second from its first connect attempt to its last CONNACK.
    pub fn connect_rate(&self) -> f64 {
        if self.first_connect_ns > 0 && self.last_connack_ns > self.first_connect_ns {
            self.connects as f64 / ((self.last_connack_ns - self.first_connect_ns) as f64 / 1e9)
        } else {
            0.0
        }
    }
}

impl Default for HostResult {
    fn default() -> Self {
        Self::new()
    }
}

pub struct ThreadResult {
    pub lat: Histogram<u64>,
    pub connect_lat: Histogram<u64>,
    pub takeover_lat: Histogram<u64>,
    pub will_lat: Histogram<u64>,
    pub tracks: HashMap<StreamKey, Track>,
    pub reordered: u64,
    /// (publisher id, messages published)
    pub sent_per_pub: Vec<(u32, u64)>,
    pub max_late_ns: u64,
    pub first_error: Option<String>,
    /// Per `--host`, in the order given.
    pub hosts: Vec<HostResult>,
}

impl ThreadResult {
    pub fn new() -> Self {
        ThreadResult {
            lat: new_hist(),
            connect_lat: new_hist(),
            takeover_lat: new_hist(),
            will_lat: new_hist(),
            tracks: HashMap::new(),
            reordered: 0,
            sent_per_pub: Vec::new(),
            max_late_ns: 0,
            first_error: None,
            hosts: Vec::new(),
        }
    }

    pub fn merge(&mut self, o: ThreadResult) {
        let _ = self.lat.add(&o.lat);
        let _ = self.connect_lat.add(&o.connect_lat);
        let _ = self.takeover_lat.add(&o.takeover_lat);
        let _ = self.will_lat.add(&o.will_lat);
        for (k, t) in o.tracks {
            self.tracks.entry(k).or_default().merge(&t);
        }
        self.reordered += o.reordered;
        self.sent_per_pub.extend(o.sent_per_pub);
        self.max_late_ns = self.max_late_ns.max(o.max_late_ns);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        if self.hosts.len() < o.hosts.len() {
            self.hosts.resize_with(o.hosts.len(), HostResult::new);
        }
        for (a, b) in self.hosts.iter_mut().zip(&o.hosts) {
            a.merge(b);
        }
    }
}

impl ThreadResult {
    /// The latency, connect and take-over histograms of all hosts together: the workers
    /// record each sample once, per host (call after merging the threads).
    pub fn fold_hosts(&mut self) {
        for h in &self.hosts {
            let _ = self.lat.add(&h.lat);
            let _ = self.connect_lat.add(&h.connect_lat);
            let _ = self.takeover_lat.add(&h.takeover_lat);
        }
    }
}

impl Default for ThreadResult {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_counts_dups_and_merges() {
        let mut a = Track::default();
        assert!(a.add(0));
        assert!(a.add(5));
        assert!(!a.add(5));
        assert_eq!((a.unique, a.dups, a.max_seq), (2, 1, Some(5)));
        let mut b = Track::default();
        b.add(5);
        b.add(130);
        a.merge(&b);
        assert_eq!((a.unique, a.dups, a.max_seq), (3, 2, Some(130)));
    }

    #[test]
    fn host_figures_merge_per_host() {
        let mut a = ThreadResult::new();
        a.hosts = vec![HostResult::new(), HostResult::new()];
        a.hosts[0].connects = 2;
        a.hosts[0].first_connect_ns = 1_000_000_000;
        a.hosts[0].last_connack_ns = 1_500_000_000;
        let mut b = ThreadResult::new();
        b.hosts = vec![HostResult::new(), HostResult::new()];
        b.hosts[0].connects = 3;
        b.hosts[0].first_connect_ns = 500_000_000;
        b.hosts[0].last_connack_ns = 1_200_000_000;
        b.hosts[1].sent = 7;
        a.merge(b);
        assert_eq!(a.hosts[0].connects, 5);
        assert_eq!(a.hosts[0].first_connect_ns, 500_000_000);
        assert_eq!(a.hosts[0].last_connack_ns, 1_500_000_000);
        assert_eq!(a.hosts[1].sent, 7);
        // 5 CONNACKs in the 1 s from the first attempt to the last CONNACK.
        assert!((a.hosts[0].connect_rate() - 5.0).abs() < 1e-9);
        // The totals are the hosts' samples together.
        let _ = a.hosts[0].lat.record(10);
        let _ = a.hosts[1].lat.record(30);
        a.fold_hosts();
        assert_eq!(a.lat.len(), 2);
        assert_eq!(a.lat.max(), 30);
    }
}
