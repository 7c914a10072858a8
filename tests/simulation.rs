//! The deterministic multi-worker simulation (`ringmq::sim`) over fixed seeds: the real broker
//! cores, seeded scheduling of socket events and inter-worker mail, simulated MQTT clients,
//! and the invariants listed in `src/sim.rs` (one live owner per ClientId; every acknowledged
//! QoS 1/2 message reaches the persistent subscriber exactly once and in order across every
//! take-over and session move; wills exactly per the rules; nothing left behind). Long runs:
//! `scripts/simulate.sh SECONDS [SEED]`.

/// Seed 2 with 200 steps lost 7 of 22 acknowledged messages before the double-move fix (with
/// the present simulation and broker; earlier versions of either lost 6 of 25 and 74 of 89 on
/// the same seed). The subscriber's session was taken over on one worker while
/// its hand-off from another was still on the way, and taken over again: the middle slot
/// passed the session on without a cut-over and told the first owner to stop forwarding, so
/// messages the first owner matched for the moving session were forwarded to a slot that no
/// longer existed. Found by this simulation, then fixed: the passing slot now relays until
/// its successor has indexed the session (`takeover.rs`, `pass_on`). The seed replays the
/// same schedule only while the simulation makes the same random choices; when the
/// simulation changes, re-find one (disable the relay in `pass_on`, run seeds) and update it.
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
