//! `SubscriptionTrie::matches`, `SharedSubscriptions::matches` and `RetainedStore::matching`
//! must not allocate. A counting global allocator checks it (one test in this binary, so no
//! other thread allocates while it counts).
mod counting;

use ringmq::routing::{RetainedStore, SharedSubscriptions, SubscriptionTrie};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[test]
fn matching_does_not_allocate() {
    let mut trie: SubscriptionTrie<u64, u8> = SubscriptionTrie::new();
    let mut shared: SharedSubscriptions<u64, u8> = SharedSubscriptions::new();
    let mut retained: RetainedStore<u32> = RetainedStore::new();
    for i in 0..200u64 {
        trie.insert(&format!("tenant/{}/device/{i}/telemetry", i % 7), i, 1)
            .unwrap();
        trie.insert(&format!("tenant/{}/device/+/telemetry", i % 7), i, 1)
            .unwrap();
        trie.insert(&format!("tenant/{}/#", i % 7), i, 1).unwrap();
        trie.insert("hot", i, 0).unwrap(); // a filter with many subscribers (hash map)
        shared
            .subscribe("g", &format!("tenant/{}/#", i % 7), i, 0)
            .unwrap();
        retained
            .set(&format!("tenant/{}/device/{i}/telemetry", i % 7), i as u32)
            .unwrap();
    }
    let mut hits = 0usize;
    let before = counting::thread_allocs();
    for i in 0..200u64 {
        let topic_buf = [
            "tenant/3/device/17/telemetry",
            "tenant/3/device/10/telemetry",
            "hot",
            "$SYS/x",
        ];
        let topic = topic_buf[(i % 4) as usize];
        trie.matches(topic, |_, _| hits += 1);
        shared.matches(topic, |_| hits += 1);
        retained.matching("tenant/+/device/#", |_| hits += 1);
        retained.matching("#", |_| hits += 1);
    }
    let after = counting::thread_allocs();
    assert!(hits > 1000, "the workload must actually match ({hits})");
    assert_eq!(after - before, 0, "matching allocated");
    // The counter is live: an allocation is seen.
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
    assert!(counting::thread_allocs() > after);
    drop(v);
}
