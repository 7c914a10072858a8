//! Topic matching with 1,000,000 subscriptions, and subscription insert/remove cost.
//!
//! Subscriptions (1000 tenants x 1000 devices, random picks): ~80% exact
//! `tenant/{t}/device/{d}/telemetry`, ~15% with `+` (`tenant/{t}/device/+/telemetry` and
//! `tenant/{t}/device/{d}/+`), ~5% with `#` (`tenant/{t}/#` and `tenant/{t}/device/{d}/#`).
//! A publish to `tenant/{t}/device/{d}/telemetry` then reaches ~100 subscriptions (mostly the
//! per-tenant `+` and `#` ones).
//!
//! - `match_1M/mixed`: one `matches` call on a random device topic (time per call = per publish).
//! - `match_1M/miss`: a topic of an unknown tenant.
//! - `insert_1M/10k` and `remove_1M/10k`: 10,000 new exact and `+` subscriptions into the 1M trie
//!   (time per iteration / 10,000 = per subscription).
//! - `retained_1M`: 1M retained topics, filters `tenant/{t}/device/{d}/telemetry` (1 hit) and
//!   `tenant/{t}/#` (1000 hits).
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::routing::{RetainedStore, SubscriptionTrie};

const TENANTS: u64 = 1000;
const DEVICES: u64 = 1000;
const SUBS: u64 = 1_000_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn filter_for(r: &mut Rng) -> String {
    let t = r.next() % TENANTS;
    let d = r.next() % DEVICES;
    match r.next() % 100 {
        0..=79 => format!("tenant/{t}/device/{d}/telemetry"),
        80..=87 => format!("tenant/{t}/device/+/telemetry"),
        88..=94 => format!("tenant/{t}/device/{d}/+"),
        95..=97 => format!("tenant/{t}/#"),
        _ => format!("tenant/{t}/device/{d}/#"),
    }
}

/// Resident set size in KiB (Linux), for a rough memory-per-subscription figure.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn build() -> SubscriptionTrie<u64, u8> {
    let rss0 = rss_kib();
    let mut r = Rng(0x5eed);
    let mut trie = SubscriptionTrie::new();
    let start = Instant::now();
    for id in 0..SUBS {
        trie.insert(&filter_for(&mut r), id, 1).unwrap();
    }
    eprintln!(
        "built 1M-subscription trie in {:?} ({} subscriptions, RSS +{} MiB)",
        start.elapsed(),
        trie.len(),
        (rss_kib().saturating_sub(rss0)) / 1024
    );
    trie
}

fn topics(n: usize, tenant_offset: u64) -> Vec<String> {
    let mut r = Rng(0xfeed);
    (0..n)
        .map(|_| {
            format!(
                "tenant/{}/device/{}/telemetry",
                r.next() % TENANTS + tenant_offset,
                r.next() % DEVICES
            )
        })
        .collect()
}

fn bench_match(c: &mut Criterion) {
    let trie = build();
    let hit = topics(4096, 0);
    let miss = topics(4096, TENANTS);
    // Average number of subscriptions reached per publish, for the report.
    let mut total = 0u64;
    for t in &hit {
        trie.matches(t, |_, _| total += 1);
    }
    eprintln!(
        "average subscriptions matched per publish: {:.1}",
        total as f64 / hit.len() as f64
    );

    let mut g = c.benchmark_group("match_1M");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("mixed", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let mut n = 0u32;
            trie.matches(black_box(&hit[i]), |k, _| n = n.wrapping_add(k as u32));
            n
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let mut n = 0u32;
            trie.matches(black_box(&miss[i]), |k, _| n = n.wrapping_add(k as u32));
            n
        })
    });
    g.finish();

    // Insert / remove 10k new subscriptions (ids above the existing ones) into the 1M trie.
    let mut trie = trie;
    let mut r = Rng(0xabcd);
    let batch: Vec<String> = (0..10_000).map(|_| filter_for(&mut r)).collect();
    let mut g = c.benchmark_group("insert_1M");
    g.sample_size(20);
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for (k, f) in batch.iter().enumerate() {
                    trie.insert(f, SUBS + k as u64, 2).unwrap();
                }
                total += start.elapsed();
                for (k, f) in batch.iter().enumerate() {
                    trie.remove(f, SUBS + k as u64);
                }
            }
            total
        })
    });
    g.finish();
    let mut g = c.benchmark_group("remove_1M");
    g.sample_size(20);
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for (k, f) in batch.iter().enumerate() {
                    trie.insert(f, SUBS + k as u64, 2).unwrap();
                }
                let start = Instant::now();
                for (k, f) in batch.iter().enumerate() {
                    trie.remove(f, SUBS + k as u64);
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn bench_retained(c: &mut Criterion) {
    let mut store: RetainedStore<u32> = RetainedStore::new();
    for t in 0..TENANTS {
        for d in 0..DEVICES {
            store
                .set(
                    &format!("tenant/{t}/device/{d}/telemetry"),
                    (t * DEVICES + d) as u32,
                )
                .unwrap();
        }
    }
    let mut r = Rng(3);
    let exact: Vec<String> = (0..4096)
        .map(|_| {
            format!(
                "tenant/{}/device/{}/telemetry",
                r.next() % TENANTS,
                r.next() % DEVICES
            )
        })
        .collect();
    let tenant: Vec<String> = (0..4096)
        .map(|_| format!("tenant/{}/#", r.next() % TENANTS))
        .collect();
    let mut g = c.benchmark_group("retained_1M");
    let mut i = 0usize;
    g.bench_function("exact", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let mut n = 0u32;
            store.matching(black_box(&exact[i]), |m| n = n.wrapping_add(*m));
            n
        })
    });
    g.throughput(Throughput::Elements(DEVICES));
    g.bench_function("tenant_hash_1000_hits", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let mut n = 0u32;
            store.matching(black_box(&tenant[i]), |m| n = n.wrapping_add(*m));
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench_match, bench_retained);
criterion_main!(benches);
