//! Run the simulation on N odd seeds (the durable ones: `sim.rs` runs odd seeds with a log)
//! and group the failures by message: `cargo run --release --example simscan -- FIRST N`.
fn main() {
    let from: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1001);
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut fails = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for seed in (from..from + 2 * n).step_by(2) {
        if let Err(f) = ringmq::sim::run(seed, 300) {
            let s = format!("{f}");
            let key: String = s
                .split(':')
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .take(4)
                .collect::<Vec<_>>()
                .join(" ");
            fails.entry(key).or_default().push(seed);
        }
    }
    for (k, v) in &fails {
        println!("{} x{}: {:?}", k, v.len(), &v[..v.len().min(5)]);
    }
    println!(
        "{} of {n} odd seeds failed",
        fails.values().map(|v| v.len()).sum::<usize>()
    );
}
