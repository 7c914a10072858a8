//! ClientId ownership table: cost of the connect-path operations (claim of a new id, claim that
//! displaces an owner, conditional release), single-threaded and with 2 threads contending.
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ringmq::ownership::{Owner, OwnershipTable, SessionKey};
use ringmq::session::ClientId;

fn owner(t: &OwnershipTable, i: u32) -> Owner {
    Owner {
        worker: (i % 4) as u16,
        session: SessionKey {
            index: i,
            generation: 1,
        },
        epoch: t.new_epoch(),
    }
}

fn bench(c: &mut Criterion) {
    let ids: Vec<ClientId> = (0..100_000)
        .map(|i| ClientId::from(format!("client-{i}").as_str()))
        .collect();
    let mut g = c.benchmark_group("ownership");
    g.bench_function("claim_new_then_release_100k", |b| {
        b.iter_batched(
            OwnershipTable::new,
            |t| {
                for (i, id) in ids.iter().enumerate() {
                    let o = owner(&t, i as u32);
                    t.claim(id, o);
                    t.release(id, o);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("takeover_claim_100k", |b| {
        let t = OwnershipTable::new();
        for (i, id) in ids.iter().enumerate() {
            t.claim(id, owner(&t, i as u32));
        }
        b.iter(|| {
            for (i, id) in ids.iter().enumerate() {
                std::hint::black_box(t.claim(id, owner(&t, i as u32)));
            }
        })
    });
    g.bench_function("takeover_claim_100k_2_threads", |b| {
        let t = Arc::new(OwnershipTable::new());
        let ids = Arc::new(ids.clone());
        b.iter(|| {
            let hs: Vec<_> = (0..2)
                .map(|k| {
                    let t = t.clone();
                    let ids = ids.clone();
                    std::thread::spawn(move || {
                        for (i, id) in ids.iter().enumerate().skip(k).step_by(2) {
                            t.claim(id, owner(&t, i as u32));
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
