//! Timing wheel vs `BinaryHeap` with lazy deletion, at 10k and 1M timers.
//!
//! - `insert`: insert N timers (deadlines spread over 60 s) into an empty, warmed-up structure.
//!   One iteration = N inserts; divide by N (criterion's throughput line gives elements/s).
//! - `keepalive`: N live connections, keep-alive 60 s, each sends a packet every ~10 s on
//!   average; time advances by 100 ms steps. One iteration = one step = N/100 resets plus the
//!   expiry processing of that step. Wheel: lazy reset (store the deadline; re-insert when a key
//!   fires and the deadline moved). Heap: push on every reset, drop stale entries when popped.
//! - `expire`: N timers, all due: pull every one out (wheel: batches of 1024). One iteration = N.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmq::runtime::wheel::TimerWheel;

const TICK: Duration = Duration::from_millis(100);
const SLOTS: usize = 1024;
const KEEPALIVE_MS: u64 = 60_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sizes() -> [usize; 2] {
    [10_000, 1_000_000]
}

fn bench_insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel/insert");
    g.sample_size(10);
    for n in sizes() {
        g.throughput(Throughput::Elements(n as u64));
        let t0 = Instant::now();
        let deadlines: Vec<Instant> = {
            let mut r = Rng(42);
            (0..n).map(|_| t0 + ms(r.next() % KEEPALIVE_MS)).collect()
        };
        g.bench_function(BenchmarkId::new("wheel", n), |b| {
            let mut w: TimerWheel<u32> = TimerWheel::new(t0, TICK, SLOTS);
            let mut out = Vec::with_capacity(n);
            let mut base = Duration::ZERO;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for (i, d) in deadlines.iter().enumerate() {
                        w.insert(i as u32, *d + base);
                    }
                    total += start.elapsed();
                    // Drain (not timed) so the next round starts empty with warm capacity.
                    base += ms(KEEPALIVE_MS + 1000);
                    out.clear();
                    while w.advance(t0 + base, usize::MAX, &mut out) {}
                    assert_eq!(out.len(), n);
                }
                total
            });
        });
        g.bench_function(BenchmarkId::new("heap", n), |b| {
            let mut h: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::with_capacity(n);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for (i, d) in deadlines.iter().enumerate() {
                        h.push(Reverse((*d, i as u32)));
                    }
                    total += start.elapsed();
                    h.clear();
                }
                total
            });
        });
    }
    g.finish();
}

/// Simulated connections for the keep-alive workload.
struct Sim {
    t0: Instant,
    now: Duration,
    deadline: Vec<Instant>,
    rng: Rng,
    resets_per_step: usize,
}

impl Sim {
    fn new(n: usize) -> Self {
        let t0 = Instant::now();
        let mut rng = Rng(7);
        let deadline = (0..n).map(|_| t0 + ms(rng.next() % KEEPALIVE_MS)).collect();
        Sim {
            t0,
            now: Duration::ZERO,
            deadline,
            rng,
            resets_per_step: (n / 100).max(1),
        }
    }
}

fn bench_keepalive(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel/keepalive_step");
    g.sample_size(20);
    for n in sizes() {
        // Throughput = resets per step, so elements/s = packets handled per second.
        g.throughput(Throughput::Elements((n / 100) as u64));
        g.bench_function(BenchmarkId::new("wheel_lazy_reset", n), |b| {
            let mut s = Sim::new(n);
            let mut w: TimerWheel<u32> = TimerWheel::new(s.t0, TICK, SLOTS);
            for (i, d) in s.deadline.iter().enumerate() {
                w.insert(i as u32, *d);
            }
            let mut out = Vec::with_capacity(4096);
            b.iter(|| {
                let now = s.t0 + s.now;
                for _ in 0..s.resets_per_step {
                    let c = (s.rng.next() % n as u64) as usize;
                    s.deadline[c] = now + ms(KEEPALIVE_MS); // the whole reset
                }
                s.now += TICK;
                let now = s.t0 + s.now;
                loop {
                    out.clear();
                    let more = w.advance(now, 1024, &mut out);
                    for &k in &out {
                        let d = &mut s.deadline[k as usize];
                        if *d <= now {
                            // Expired: the connection would be closed; a new one takes its slot.
                            *d = now + ms(KEEPALIVE_MS);
                        }
                        w.insert(k, *d);
                    }
                    if !more {
                        break;
                    }
                }
                black_box(w.len())
            });
        });
        g.bench_function(BenchmarkId::new("heap_lazy_delete", n), |b| {
            let mut s = Sim::new(n);
            let mut h: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::with_capacity(n * 2);
            for (i, d) in s.deadline.iter().enumerate() {
                h.push(Reverse((*d, i as u32)));
            }
            b.iter(|| {
                let now = s.t0 + s.now;
                for _ in 0..s.resets_per_step {
                    let c = (s.rng.next() % n as u64) as usize;
                    let d = now + ms(KEEPALIVE_MS);
                    s.deadline[c] = d;
                    h.push(Reverse((d, c as u32)));
                }
                s.now += TICK;
                let now = s.t0 + s.now;
                while let Some(Reverse((d, k))) = h.peek().copied() {
                    if d > now {
                        break;
                    }
                    h.pop();
                    let cur = &mut s.deadline[k as usize];
                    if *cur != d {
                        continue; // stale entry of a reset timer
                    }
                    // Expired: replaced by a new connection.
                    *cur = now + ms(KEEPALIVE_MS);
                    h.push(Reverse((*cur, k)));
                }
                black_box(h.len())
            });
        });
    }
    g.finish();
}

fn bench_expire(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel/expire");
    g.sample_size(10);
    for n in sizes() {
        g.throughput(Throughput::Elements(n as u64));
        let t0 = Instant::now();
        let deadlines: Vec<Instant> = {
            let mut r = Rng(99);
            (0..n).map(|_| t0 + ms(r.next() % KEEPALIVE_MS)).collect()
        };
        g.bench_function(BenchmarkId::new("wheel", n), |b| {
            let mut w: TimerWheel<u32> = TimerWheel::new(t0, TICK, SLOTS);
            let mut out = Vec::with_capacity(1024);
            let mut base = Duration::ZERO;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for (i, d) in deadlines.iter().enumerate() {
                        w.insert(i as u32, *d + base);
                    }
                    base += ms(KEEPALIVE_MS + 1000);
                    let now = t0 + base;
                    let mut got = 0usize;
                    let start = Instant::now();
                    loop {
                        out.clear();
                        let more = w.advance(now, 1024, &mut out);
                        got += out.len();
                        black_box(&out);
                        if !more {
                            break;
                        }
                    }
                    total += start.elapsed();
                    assert_eq!(got, n);
                }
                total
            });
        });
        g.bench_function(BenchmarkId::new("heap", n), |b| {
            let mut h: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::with_capacity(n);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for (i, d) in deadlines.iter().enumerate() {
                        h.push(Reverse((*d, i as u32)));
                    }
                    let now = t0 + ms(KEEPALIVE_MS + 1000);
                    let mut got = 0usize;
                    let start = Instant::now();
                    while let Some(Reverse((d, k))) = h.peek().copied() {
                        if d > now {
                            break;
                        }
                        h.pop();
                        black_box(k);
                        got += 1;
                    }
                    total += start.elapsed();
                    assert_eq!(got, n);
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_insert, bench_keepalive, bench_expire);
criterion_main!(benches);
