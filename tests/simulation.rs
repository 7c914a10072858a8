//! The deterministic multi-worker simulation (`ringmq::sim`) over fixed seeds: the real broker
//! cores, seeded scheduling of socket events and inter-worker mail, simulated MQTT clients,
//! and the invariants listed in `src/sim.rs` (one live owner per ClientId; every acknowledged
//! QoS 1/2 message reaches the persistent subscriber exactly once and in order across every
//! take-over and session move; wills exactly per the rules; nothing left behind). Long runs:
//! `scripts/simulate.sh SECONDS [SEED]`.

/// Seed 2 with 200 steps lost 6 of 25 acknowledged messages before the double-move fix: the
/// subscriber's session was taken over on worker 1 while its hand-off from worker 0 was still
/// on the way, and taken over again from worker 0; worker 1 passed the session on without a
/// cut-over and told worker 0 to stop forwarding, so `p1:4:8`, which worker 0 matched for the
/// moving session, was forwarded to a slot that no longer existed (found by this simulation,
/// then fixed: the passing slot now relays until its successor has indexed the session).
#[test]
fn double_move_regression_seed() {
    if let Err(f) = ringmq::sim::run(2, 200) {
        panic!("{f}");
    }
}

/// Thousands of seeds, bounded to seconds: each seed is a few hundred random steps plus the
/// quiescence and leak checks.
#[test]
fn many_seeds() {
    let seeds: u64 = std::env::var("RINGMQ_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut steps = 0;
    let mut accepted = 0;
    let mut takeovers = 0;
    for seed in 1000..1000 + seeds {
        match ringmq::sim::run(seed, 300) {
            Ok(r) => {
                steps += r.steps;
                accepted += r.accepted;
                takeovers += r.takeovers;
            }
            Err(f) => panic!("{f}"),
        }
    }
    // The runs must have exercised what they check.
    assert!(
        accepted > seeds as usize,
        "only {accepted} messages acknowledged"
    );
    assert!(takeovers > seeds, "only {takeovers} take-overs");
    eprintln!(
        "{seeds} seeds, {steps} steps, {accepted} acknowledged messages, {takeovers} take-overs"
    );
}
