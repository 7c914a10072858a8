//! The deterministic multi-worker simulation (`ringmq::sim`) steered by the fuzz input: its
//! bytes are the scheduler's choices (which worker, which client action, which socket event
//! or mail comes next, how bytes are split, how far time jumps), then a generator takes over.
//! Invariants (asserted inside the simulation; a broken one panics with its description):
//! one live owner per ClientId; every QoS 1/2 message acknowledged to its publisher reaches
//! the persistent subscriber exactly once and in order across take-overs and session moves;
//! wills exactly per the rules; no connection, session, timer, mailbox byte, subscription or
//! ownership entry left once every client has gone.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // About one random step per four input bytes, bounded so each run stays short.
    let steps = (data.len() as u64 / 4).clamp(16, 400);
    let _ = ringmq::sim::run_bytes(data, steps);
});
