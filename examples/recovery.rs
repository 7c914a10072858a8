//! Recovery time of a big data dir: writes N persistent offline sessions with S subscriptions
//! each as two workers' snapshots (the format the broker writes), then starts a broker on it
//! and reports how long reading, restoring and writing the first snapshots took.
//!
//! `cargo run --release --example recovery -- [SESSIONS] [SUBS] [DIR]` (env RINGMQ_NO_0X10=1:
//! `no_matching_subscribers_reason = false`)
//! (defaults 1000000, 10, a temp dir; the dir is removed afterwards unless given). The broker
//! starts in a process of its own (this program run again with `--start`), as after a restart:
//! no memory of the writing phase to reuse.

use std::time::{Duration, Instant};

use ringmq::protocol::{ProtocolVersion, QoS, SubscriptionOptions};
use ringmq::session::{Session, Subscription};
use ringmq::storage::{log, record};

// The broker binary's allocator, so the figures are the broker's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let _ = tracing_subscriber::fmt().with_ansi(false).try_init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--start") {
        start(
            args[2].parse().expect("sessions"),
            std::path::PathBuf::from(&args[3]),
        );
        return;
    }
    let n: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let subs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let keep = args.get(3).is_some();
    let dir = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("ringmq-recovery-{}", std::process::id()))
        });
    let _ = std::fs::remove_dir_all(&dir);
    let workers = 2;
    let t0 = Instant::now();
    let mut bytes = 0usize;
    let deadline = Instant::now() + Duration::from_secs(7 * 86400);
    for w in 0..workers {
        let wdir = log::worker_dir(&dir, w);
        std::fs::create_dir_all(&wdir).unwrap();
        let mut out = Vec::with_capacity(n / workers * (subs * 40 + 100));
        let mut body = Vec::new();
        for i in (w..n).step_by(workers) {
            let id = format!("device-{i:08}");
            let mut s = Session::new(id.as_str().into(), ProtocolVersion::V5);
            for f in 0..subs {
                let filter = format!("fleet/{}/dev/{i}/cmd/{f}", i % 1000);
                s.subscribe_for_restore(
                    filter.as_str().into(),
                    Subscription {
                        options: SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            ..Default::default()
                        },
                        subscription_id: None,
                    },
                );
            }
            s.set_expiry_for_restore(7 * 86400);
            body.clear();
            record::put_image(&mut body, &s, None);
            record::put_offline(&mut body, Some(deadline), None);
            record::session_frame(&mut out, &id, 1 + i as u64, &body);
        }
        record::marker_frame(&mut out, record::RETAINED_IMAGE, 0);
        record::marker_frame(&mut out, record::END, 0);
        bytes += out.len();
        log::write_snapshot(&wdir, 1, &out).unwrap();
    }
    let write = t0.elapsed();
    println!(
        "wrote {n} sessions x {subs} subscriptions: {:.1} MB of snapshots in {:.2} s",
        bytes as f64 / 1e6,
        write.as_secs_f64()
    );
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--start")
        .arg(n.to_string())
        .arg(&dir)
        .status()
        .expect("broker process");
    assert!(status.success(), "broker start failed: {status}");
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Start a 2-worker broker on `dir` and report how long recovery took.
fn start(n: usize, dir: std::path::PathBuf) {
    let cfg = ringmq::config::Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 2,
        pin_workers: false,
        data_dir: Some(dir),
        max_sessions_per_worker: n,
        sys_interval_secs: 0,
        // RINGMQ_NO_0X10=1: without the other workers' filter views (PUBACK 0x10).
        no_matching_subscribers_reason: std::env::var("RINGMQ_NO_0X10").is_err(),
        ..Default::default()
    };
    let t1 = Instant::now();
    let handle = ringmq::broker::start(cfg).expect("broker starts");
    let start = t1.elapsed();
    let m: std::collections::HashMap<_, _> = handle.metrics().into_iter().collect();
    println!(
        "broker start on it: {:.2} s (recovery: read + replay + restore + first snapshots {:.2} s, {} records)",
        start.as_secs_f64(),
        m["recovery_micros"] as f64 / 1e6,
        m["recovery_records"]
    );
    println!("sessions held: {}", m["sessions_current"]);
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        for (key, what) in [("VmHWM", "peak RSS"), ("VmRSS", "RSS once started")] {
            if let Some(l) = s.lines().find(|l| l.starts_with(key)) {
                println!(
                    "{what}: {}",
                    l.trim_start_matches(key).trim_start_matches(':').trim()
                );
            }
        }
    }
    // No teardown of millions of sessions: the figures are in.
    std::process::exit(0);
}
