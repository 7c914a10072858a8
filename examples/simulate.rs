//! Long runs of the deterministic simulation (`ringmq::sim`): `scripts/simulate.sh SECONDS
//! [SEED]`. With a seed: replays that one seed and prints its report or failure. Without:
//! runs consecutive seeds from a random start for SECONDS and prints the totals.
//!
//!   RINGMQ_SIM_STEPS=3000 cargo run --release --example simulate -- SECONDS [SEED]
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: Option<u64> = args.get(1).and_then(|s| s.parse().ok());
    let steps: u64 = std::env::var("RINGMQ_SIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    if let Some(seed) = seed {
        match ringmq::sim::run(seed, steps) {
            Ok(r) => println!("seed {seed}: ok {r:?}"),
            Err(f) => {
                println!("{f}");
                std::process::exit(1);
            }
        }
        return;
    }
    let start = Instant::now();
    let first = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let (mut seeds, mut total_steps, mut accepted, mut takeovers) = (0u64, 0u64, 0u64, 0u64);
    let mut seed = first;
    while start.elapsed() < Duration::from_secs(seconds) {
        match ringmq::sim::run(seed, steps) {
            Ok(r) => {
                seeds += 1;
                total_steps += r.steps;
                accepted += r.accepted as u64;
                takeovers += r.takeovers;
            }
            Err(f) => {
                println!("{f}");
                std::process::exit(1);
            }
        }
        seed = seed.wrapping_add(1);
    }
    println!(
        "{seeds} seeds from {first} ({steps} random steps each): {total_steps} steps, \
         {accepted} acknowledged QoS 1/2 messages, {takeovers} take-overs, no invariant broken, \
         {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
