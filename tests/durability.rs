//! Durable sessions (`--data-dir`): the broker binary is killed with SIGKILL at random
//! moments under QoS 1 and QoS 2 load and restarted on the same data dir; what it
//! acknowledged must be there. Clients: the raw client of `support` (exact control of packet
//! ids, DUP and the QoS 2 flow) and mosquitto_pub/mosquitto_sub.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmq::protocol::*;
use support::{connect, connect_packet, free_port, subscribe, temp_dir, Raw};

/// The broker binary on a data dir.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    /// On a port the kernel picks (read back from the broker's log): brokers of tests running
    /// in parallel bind with SO_REUSEPORT, so a port chosen in advance could be shared.
    fn start(dir: &Path, extra: &[&str]) -> Broker {
        Self::try_start(dir, extra).unwrap_or_else(|text| panic!("broker did not start: {text}"))
    }

    /// `start`, or the broker's log if it stopped (a port given in `extra` was taken).
    // The child is waited for by `Broker`'s `kill` (and its Drop).
    #[allow(clippy::zombie_processes)]
    fn try_start(dir: &Path, extra: &[&str]) -> Result<Broker, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let log_path = std::env::temp_dir().join(format!(
            "ringmq-dur-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Self::spawn(dir, "127.0.0.1:0", extra, &log_path);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(a) = text
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|a| a.trim().split(' ').next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                return Ok(Broker { child, addr: a });
            }
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(text);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(dir: &Path, listen: &str, extra: &[&str], log_path: &Path) -> Child {
        let log = std::fs::File::create(log_path).unwrap();
        Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["--listen", listen, "--workers", "2", "--no-pin"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ringmq runs")
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM: a clean stop.
    fn stop(&mut self) {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Broker {
    /// A broker whose workers also listen each on a port of their own, `base + worker`
    /// (`--worker-port-base`), so a client can pick its worker; returns it and `base`.
    fn start_with_worker_ports(dir: &Path) -> (Broker, u16) {
        // Ports chosen in advance can be taken by a parallel test's broker: try others.
        for _ in 0..20 {
            let base = free_port();
            let args = ["--worker-port-base", &base.to_string()];
            if let Ok(b) = Broker::try_start(dir, &args) {
                return (b, base);
            }
        }
        panic!("no free worker ports");
    }
}

/// Worker `i`'s own port of a broker started by `Broker::start_with_worker_ports`.
fn worker_addr(base: u16, i: u16) -> SocketAddr {
    format!("127.0.0.1:{}", base + i).parse().unwrap()
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn v5_connect(id: &str, clean: bool, expiry: u32) -> Connect {
    let mut c = connect_packet(ProtocolVersion::V5, id, 60, clean);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

/// Read every PUBLISH until the connection is quiet for `quiet`, completing QoS 1 and 2
/// flows as a client does; returns (payload, dup) in arrival order.
fn drain(raw: &mut Raw, quiet: Duration) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    while let Some(p) = raw.recv(quiet) {
        match p {
            Packet::Publish(p) => {
                match p.qos {
                    QoS::AtLeastOnce => raw.send(&Packet::PubAck(PubResp::new(p.packet_id))),
                    QoS::ExactlyOnce => raw.send(&Packet::PubRec(PubResp::new(p.packet_id))),
                    QoS::AtMostOnce => {}
                }
                got.push((String::from_utf8_lossy(&p.payload).into_owned(), p.dup));
            }
            Packet::PubRel(r) => raw.send(&Packet::PubComp(PubResp::new(r.packet_id))),
            _ => {}
        }
    }
    got
}

fn publish(topic: &str, payload: &str, qos: QoS, pid: u16, dup: bool, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        properties: Default::default(),
    })
}

/// A small xorshift, seeded from the clock (printed, so a failure can be replayed).
fn seed() -> u64 {
    let s = std::env::var("RINGMQ_DUR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("RINGMQ_DUR_SEED={s}");
    s | 1
}

fn next(r: &mut u64) -> u64 {
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    *r
}

const N: usize = 400;

/// What the publisher saw acknowledged before the kill.
#[derive(Default)]
struct Acks {
    puback: HashSet<u16>,
    pubrec: HashSet<u16>,
    pubcomp: HashSet<u16>,
}

fn qos_of(i: usize) -> QoS {
    if i.is_multiple_of(2) {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    }
}

/// One round: subscribers offline and online, a publisher at QoS 1 and 2, SIGKILL once
/// `kill_after` acknowledgements have been read, restart, and check.
fn crash_round(dir: &Path, kill_after: usize, pace: &mut u64, mode: &str) {
    let mode_args = ["--durability", mode];
    let mut b = Broker::start(dir, &mode_args);
    let addr = b.addr;
    // Offline persistent subscriber (QoS 2) and one that stays online (QoS 1).
    let (mut off, ack) = connect(addr, v5_connect("off-sub", true, 3600));
    assert!(!ack.session_present);
    subscribe(&mut off, 1, "load/#", QoS::ExactlyOnce);
    drop(off);
    let (mut on, _) = connect(addr, v5_connect("on-sub", true, 3600));
    subscribe(&mut on, 1, "load/#", QoS::AtLeastOnce);
    // A session that expires while the broker is down must not come back.
    let (mut short, _) = connect(addr, v5_connect("short", true, 1));
    subscribe(&mut short, 1, "short/#", QoS::AtLeastOnce);
    drop(short);
    // A retained message, acknowledged.
    let (mut p, _) = connect(addr, v5_connect("pub", true, 3600));
    p.send(&publish(
        "load/retained",
        "keep-me",
        QoS::AtLeastOnce,
        9999,
        false,
        true,
    ));
    assert!(matches!(
        p.recv(Duration::from_secs(5)),
        Some(Packet::PubAck(r)) if r.packet_id == 9999
    ));
    // The online subscriber reads in the background.
    let on_got = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let on_thread = {
        let got = on_got.clone();
        std::thread::spawn(move || {
            let v = drain(&mut on, Duration::from_secs(3));
            got.lock().unwrap().extend(v);
        })
    };
    // Publisher: a reader counts acks (and completes QoS 2 for some) and kills the broker
    // after `kill_after` of them.
    let acks = Arc::new(Mutex::new(Acks::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicUsize::new(0));
    let mut reader = Raw::from_stream(p.stream.try_clone().unwrap(), ProtocolVersion::V5);
    let writer = Arc::new(Mutex::new(p));
    let reader_thread = {
        let (acks, stop, read, writer) = (acks.clone(), stop.clone(), read.clone(), writer.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(pk) = reader.recv(Duration::from_secs(5)) else {
                    break;
                };
                let mut a = acks.lock().unwrap();
                match pk {
                    Packet::PubAck(r) => {
                        a.puback.insert(r.packet_id);
                    }
                    Packet::PubRec(r) => {
                        a.pubrec.insert(r.packet_id);
                        // Release every other one at once; the rest stay in PUBREC state.
                        if r.packet_id % 4 == 0 {
                            writer
                                .lock()
                                .unwrap()
                                .send(&Packet::PubRel(PubResp::new(r.packet_id)));
                        }
                    }
                    Packet::PubComp(r) => {
                        a.pubcomp.insert(r.packet_id);
                    }
                    _ => continue,
                }
                read.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut killed = false;
    for i in 0..N {
        let pid = (i + 1) as u16;
        let sent = {
            let mut w = writer.lock().unwrap();
            let mut out = bytes::BytesMut::new();
            encode_packet(
                &publish("load/x", &format!("m{i}"), qos_of(i), pid, false, false),
                ProtocolVersion::V5,
                &mut out,
            );
            std::io::Write::write_all(&mut w.stream, &out).is_ok()
        };
        if !sent {
            break;
        }
        if next(pace).is_multiple_of(8) {
            std::thread::sleep(Duration::from_micros(next(pace) % 2000));
        }
        if read.load(Ordering::Relaxed) >= kill_after {
            b.kill();
            killed = true;
            break;
        }
    }
    if !killed {
        let deadline = Instant::now() + Duration::from_secs(10);
        while read.load(Ordering::Relaxed) < kill_after && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        b.kill();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader_thread.join();
    let _ = on_thread.join();
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let on_before = std::mem::take(&mut *on_got.lock().unwrap());
    eprintln!(
        "killed after {} acks read: {} PUBACK, {} PUBREC, {} PUBCOMP",
        read.load(Ordering::Relaxed),
        acks.puback.len(),
        acks.pubrec.len(),
        acks.pubcomp.len()
    );
    drop(b);
    std::thread::sleep(Duration::from_millis(1100)); // "short" expires meanwhile

    let b = Broker::start(dir, &mode_args);
    let addr = b.addr;
    // The publisher resumes its session: the QoS 2 ids it got PUBREC for are still held
    // (PUBREL gets PUBCOMP 0x00, not 0x92), and it finishes everything else.
    let (mut p, ack) = connect(addr, v5_connect("pub", false, 3600));
    assert!(ack.session_present, "publisher session lost");
    for i in 0..N {
        let pid = (i + 1) as u16;
        let q = qos_of(i);
        let unacked = match q {
            QoS::AtLeastOnce => !acks.puback.contains(&pid),
            _ => !acks.pubrec.contains(&pid),
        };
        if unacked {
            p.send(&publish("load/x", &format!("m{i}"), q, pid, true, false));
        } else if q == QoS::ExactlyOnce && !acks.pubcomp.contains(&pid) {
            p.send(&Packet::PubRel(PubResp::new(pid)));
        }
    }
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let expected = N - acks.puback.len() - acks.pubcomp.len();
    while done < expected && Instant::now() < deadline {
        match p.recv(Duration::from_secs(5)) {
            Some(Packet::PubAck(r)) => {
                assert_eq!(r.reason, ReasonCode::SUCCESS);
                done += 1;
            }
            Some(Packet::PubRec(r)) => {
                assert_eq!(r.reason, ReasonCode::SUCCESS);
                p.send(&Packet::PubRel(PubResp::new(r.packet_id)));
            }
            Some(Packet::PubComp(r)) => {
                if acks.pubrec.contains(&r.packet_id) && r.packet_id % 4 != 0 {
                    // Never released before the kill: the id must have survived.
                    assert_eq!(
                        r.reason,
                        ReasonCode::SUCCESS,
                        "inbound QoS 2 id {} acknowledged by PUBREC was lost",
                        r.packet_id
                    );
                }
                done += 1;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(done, expected, "publisher flows did not complete");

    // The offline subscriber: its session, its subscription, every message.
    let (mut off, ack) = connect(addr, v5_connect("off-sub", false, 3600));
    assert!(ack.session_present, "offline subscriber's session lost");
    let got = drain(&mut off, Duration::from_secs(2));
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (m, _) in &got {
        *count.entry(m.as_str()).or_default() += 1;
    }
    for i in 0..N {
        let m = format!("m{i}");
        let c = count.get(m.as_str()).copied().unwrap_or(0);
        let pid = (i + 1) as u16;
        match qos_of(i) {
            // QoS 2: exactly once, whether it got its PUBREC before the kill or was sent
            // again after the restart (a fan-out to the other worker is settled at start).
            QoS::ExactlyOnce => assert_eq!(
                c,
                1,
                "QoS 2 {m} (PUBREC read before the kill: {}) delivered {c} times",
                acks.pubrec.contains(&pid)
            ),
            _ => assert!(c >= 1, "{m} lost"),
        }
    }
    // The online one: everything, duplicates flagged DUP.
    let (mut on, ack) = connect(addr, v5_connect("on-sub", false, 3600));
    assert!(ack.session_present, "online subscriber's session lost");
    let after = drain(&mut on, Duration::from_secs(2));
    let mut seen: HashSet<String> = on_before.iter().map(|(m, _)| m.clone()).collect();
    for (m, dup) in &after {
        // A message the publisher sent again (not acknowledged before the kill) may be a new
        // message to the broker; any other second delivery is the broker's resend: DUP.
        let i: usize = m[1..].parse().unwrap_or(usize::MAX);
        let pid = (i + 1) as u16;
        let resent = i < N
            && match qos_of(i) {
                QoS::AtLeastOnce => !acks.puback.contains(&pid),
                _ => !acks.pubrec.contains(&pid),
            };
        if !seen.insert(m.clone()) && !resent {
            assert!(*dup, "{m} delivered again without DUP");
        }
    }
    for i in 0..N {
        assert!(seen.contains(&format!("m{i}")), "m{i} never reached on-sub");
    }
    // Subscriptions are live, the retained message is there, the expired session is not.
    p.send(&publish(
        "load/after",
        "after",
        QoS::AtLeastOnce,
        1,
        false,
        false,
    ));
    let got = drain(&mut on, Duration::from_secs(1));
    assert!(got.iter().any(|(m, _)| m == "after"), "subscription lost");
    let (mut fresh, _) = connect(addr, v5_connect("fresh", true, 0));
    subscribe(&mut fresh, 1, "load/retained", QoS::AtLeastOnce);
    let got = drain(&mut fresh, Duration::from_secs(1));
    assert!(got.iter().any(|(m, _)| m == "keep-me"), "retained lost");
    let (_short, ack) = connect(addr, v5_connect("short", false, 1));
    assert!(!ack.session_present, "an expired session came back");
}

#[test]
fn sigkill_under_qos1_and_qos2_load_loses_nothing_acknowledged() {
    let mut r = seed();
    // SIGKILL is a crash of the broker alone: `batched` must lose nothing acknowledged either
    // (it acknowledges once the kernel has the write).
    for (round, mode) in ["sync", "sync", "batched", "sync"].into_iter().enumerate() {
        let dir = temp_dir(&format!("crash{round}"));
        let kill_after = 20 + (next(&mut r) % (N as u64 - 40)) as usize;
        eprintln!("round {round} ({mode}): kill after {kill_after} acks");
        crash_round(&dir, kill_after, &mut r, mode);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn clean_restart_keeps_sessions_for_mosquitto_clients() {
    if !support::have_mosquitto() {
        assert!(
            std::env::var("CI").is_err(),
            "mosquitto clients missing in CI"
        );
        return;
    }
    let dir = temp_dir("mosq");
    let mut b = Broker::start(&dir, &["--durability", "batched"]);
    let p = b.addr.port().to_string();
    let sub = |p: &str, extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", p, "-V", "mqttv311", "-q", "1"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Subscribe with a persistent session, leave.
    let out = sub(&p, &["-c", "-i", "mq-sub", "-t", "mq/#", "-W", "1"]);
    let _ = out;
    for i in 0..5 {
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &p, "-q", "1", "-t", "mq/a"])
            .args(["-m", &format!("msg{i}")])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &p, "-q", "1", "-r", "-t", "mq/ret"])
        .args(["-m", "retained"])
        .status()
        .unwrap();
    assert!(st.success());
    b.stop();
    let b2 = Broker::start(&dir, &["--durability", "batched"]);
    let p2 = b2.addr.port().to_string();
    let out = sub(
        &p2,
        &[
            "-c", "-i", "mq-sub", "-t", "mq/#", "-W", "2", "-C", "6", "-v",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for i in 0..5 {
        assert!(
            text.contains(&format!("mq/a msg{i}")),
            "msg{i} lost: {text}"
        );
    }
    assert!(text.contains("mq/ret retained"), "retained lost: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The log files of a data dir with their bytes.
fn logs_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for (_, wdir) in ringmq::storage::recover::worker_dirs(dir).unwrap() {
        for e in std::fs::read_dir(&wdir).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let b = std::fs::read(&p).unwrap();
                if !b.is_empty() {
                    v.push((p, b));
                }
            }
        }
    }
    v
}

/// Frame boundaries of a log.
fn boundaries(log: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    let mut off = 0;
    while let ringmq::storage::record::Frame::Ok(_, used) =
        ringmq::storage::record::read_frame(&log[off..])
    {
        off += used;
        v.push(off);
    }
    assert_eq!(off, log.len(), "a log written whole parses whole");
    v
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

/// Messages kept for `client` (queued or in flight) after recovering `dir` (None: no such
/// session).
fn queued_after_recovery(
    dir: &Path,
    client: &str,
    truncate: bool,
) -> Result<Option<usize>, String> {
    let rec = ringmq::storage::recover::recover(dir, 2, truncate, Instant::now())?;
    Ok(rec
        .sessions
        .iter()
        .flatten()
        .find(|r| r.client_id == client)
        .map(|r| r.session.queued_len() + r.session.inflight_len()))
}

#[test]
fn a_log_cut_at_any_byte_of_its_last_records_recovers_the_records_before_the_cut() {
    let dir = temp_dir("torn");
    let mut b = Broker::start(&dir, &[]);
    let (mut s, _) = connect(b.addr, v5_connect("tw-sub", true, 3600));
    subscribe(&mut s, 1, "tw/#", QoS::AtLeastOnce);
    drop(s);
    let (mut p, _) = connect(b.addr, v5_connect("tw-pub", true, 0));
    for i in 0..20u16 {
        p.send(&publish(
            "tw/x",
            &format!("t{i}"),
            QoS::AtLeastOnce,
            i + 1,
            false,
            false,
        ));
        assert!(matches!(
            p.recv(Duration::from_secs(5)),
            Some(Packet::PubAck(_))
        ));
    }
    b.kill();
    drop(b);
    assert_eq!(queued_after_recovery(&dir, "tw-sub", false), Ok(Some(20)));
    let scratch = dir.with_extension("cut");
    let logs = logs_of(&dir);
    assert!(!logs.is_empty());
    let mut cuts = 0;
    for (path, bytes) in &logs {
        let bounds = boundaries(bytes);
        let rel = path.strip_prefix(&dir).unwrap();
        // The queue length with the log cut at each frame boundary.
        let at_bound: Vec<usize> = bounds
            .iter()
            .map(|&b| {
                copy_dir(&dir, &scratch);
                std::fs::write(scratch.join(rel), &bytes[..b]).unwrap();
                queued_after_recovery(&scratch, "tw-sub", false)
                    .unwrap()
                    .unwrap_or(0)
            })
            .collect();
        // Every byte offset inside the last records: what the frame before the cut had.
        let from = bounds[bounds.len().saturating_sub(4)];
        for cut in from..bytes.len() {
            copy_dir(&dir, &scratch);
            std::fs::write(scratch.join(rel), &bytes[..cut]).unwrap();
            let whole = bounds.iter().rposition(|&b| b <= cut).unwrap();
            let got = queued_after_recovery(&scratch, "tw-sub", false)
                .unwrap_or_else(|e| panic!("cut at {cut} of {}: {e}", path.display()))
                .unwrap_or(0);
            assert_eq!(got, at_bound[whole], "cut at {cut} of {}", path.display());
            cuts += 1;
        }
        // A damaged record before the end is not a torn write: the start stops, naming the
        // file and offset, unless told to go on.
        if bounds.len() > 3 {
            copy_dir(&dir, &scratch);
            let mut bad = bytes.clone();
            let at = bounds[1] + 10;
            bad[at] ^= 0x55;
            std::fs::write(scratch.join(rel), &bad).unwrap();
            let e = queued_after_recovery(&scratch, "tw-sub", false).unwrap_err();
            assert!(
                e.contains(&path.file_name().unwrap().to_string_lossy().to_string()),
                "{e}"
            );
            assert!(e.contains(&format!("offset {}", bounds[1])), "{e}");
            assert!(queued_after_recovery(&scratch, "tw-sub", true).is_ok());
        }
    }
    eprintln!("{cuts} cut points checked in {} logs", logs.len());
    assert!(cuts > 0);
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::remove_dir_all(&dir);
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("ringmq_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Fill the file system of `dir` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xAAu8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_refuses_what_it_cannot_keep_and_recovers_by_itself() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").is_err(),
            "the disk-full test needs root in CI"
        );
        eprintln!("SKIP: mounting a small tmpfs needs root");
        return;
    }
    let mnt = temp_dir("full");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    if !st.success() {
        assert!(std::env::var("CI").is_err(), "cannot mount a tmpfs in CI");
        eprintln!("SKIP: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let data = mnt.join("data");
    let mport = free_port();
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let margs = ["--metrics-listen", &maddr.to_string()];
    let mut b = Broker::start(&data, &margs);
    let (mut s, _) = connect(b.addr, v5_connect("full-sub", true, 3600));
    subscribe(&mut s, 1, "full/#", QoS::AtLeastOnce);
    drop(s);
    let (mut p, _) = connect(b.addr, v5_connect("full-pub", true, 0));
    p.send(&publish(
        "full/x",
        "before",
        QoS::AtLeastOnce,
        1,
        false,
        false,
    ));
    assert!(
        matches!(p.recv(Duration::from_secs(5)), Some(Packet::PubAck(r)) if r.reason == ReasonCode::SUCCESS)
    );

    let filler = fill(&mnt);
    // The first message after the disk filled cannot be written: no acknowledgement for it
    // while the disk is full (and, acks being in order, none after it on that connection).
    let big = "x".repeat(8192);
    p.send(&publish(
        "full/x",
        &format!("2{big}"),
        QoS::AtLeastOnce,
        2,
        false,
        false,
    ));
    assert!(
        p.recv(Duration::from_millis(500)).is_none(),
        "acknowledged while the disk is full"
    );
    // Another publisher is told at once: 0x97 Quota exceeded.
    let (mut p2, _) = connect(b.addr, v5_connect("full-pub2", true, 0));
    let mut refused = false;
    for i in 1..50u16 {
        p2.send(&publish(
            "full/x",
            &format!("r{i}{big}"),
            QoS::AtLeastOnce,
            i,
            false,
            false,
        ));
        match p2.recv(Duration::from_secs(5)) {
            Some(Packet::PubAck(r)) if r.reason == ReasonCode::QUOTA_EXCEEDED => {
                refused = true;
                break;
            }
            Some(Packet::PubAck(r)) => assert_eq!(r.reason, ReasonCode::SUCCESS),
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refused, "a full disk did not refuse QoS 1");
    assert!(metric(maddr, "storage_errors") > 0);
    // A persistent CONNECT is refused too; a clean one is not.
    let mut c = Raw::connect_tcp(b.addr, ProtocolVersion::V5);
    c.send(&Packet::Connect(Box::new(v5_connect("full-new", true, 60))));
    match c.recv(Duration::from_secs(5)) {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ReasonCode::QUOTA_EXCEEDED),
        other => panic!("{other:?}"),
    }
    let (_clean, a) = connect(b.addr, v5_connect("full-clean", true, 0));
    assert_eq!(a.code, ReasonCode::SUCCESS);

    // Space again: the held acknowledgement goes, new messages are accepted.
    std::fs::remove_file(&filler).unwrap();
    let mut acked_late = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match p.recv(Duration::from_millis(500)) {
            Some(Packet::PubAck(r)) => {
                assert_eq!(r.reason, ReasonCode::SUCCESS);
                acked_late.push(r.packet_id);
            }
            Some(_) => {}
            None if !acked_late.is_empty() => break,
            None => {}
        }
    }
    assert_eq!(acked_late, vec![2], "the held acknowledgement");
    let last = 100u16;
    p.send(&publish(
        "full/x",
        "after",
        QoS::AtLeastOnce,
        last,
        false,
        false,
    ));
    assert!(
        matches!(p.recv(Duration::from_secs(5)), Some(Packet::PubAck(r)) if r.reason == ReasonCode::SUCCESS && r.packet_id == last)
    );

    // What was acknowledged is there after a crash; what was refused is not.
    b.kill();
    drop(b);
    let b = Broker::start(&data, &[]);
    let (mut s, a) = connect(b.addr, v5_connect("full-sub", false, 3600));
    assert!(a.session_present);
    let got: Vec<String> = drain(&mut s, Duration::from_secs(2))
        .into_iter()
        .map(|(m, _)| m.chars().take(8).collect())
        .collect();
    assert!(got.iter().any(|m| m == "before"), "{got:?}");
    assert!(got.iter().any(|m| m == "after"), "{got:?}");
    assert!(
        got.iter().any(|m| m.starts_with("2x")),
        "the held message lost: {got:?}"
    );
    assert!(
        !got.iter().any(|m| m.starts_with('r')),
        "a refused message was kept: {got:?}"
    );
    drop(b);
}

#[test]
fn a_restored_subscription_on_one_worker_is_seen_by_a_publisher_on_the_other() {
    let dir = temp_dir("views");
    let (mut b, base) = Broker::start_with_worker_ports(&dir);
    let (mut s, _) = connect(worker_addr(base, 0), v5_connect("view-sub", true, 3600));
    subscribe(&mut s, 1, "v/#", QoS::AtLeastOnce);
    drop(s);
    b.kill();
    drop(b);
    let (b, base) = Broker::start_with_worker_ports(&dir);
    // PUBACK 0x10 would say nobody subscribes: the view of worker 0's restored filters must
    // be in place on worker 1.
    let (mut p, _) = connect(worker_addr(base, 1), v5_connect("view-pub", true, 0));
    p.send(&publish("v/x", "seen", QoS::AtLeastOnce, 1, false, false));
    match p.recv(Duration::from_secs(5)) {
        Some(Packet::PubAck(r)) => assert_eq!(r.reason, ReasonCode::SUCCESS),
        other => panic!("{other:?}"),
    }
    // And the views are in step: a topic nobody subscribes to still gets 0x10.
    p.send(&publish(
        "nobody/x",
        "lost",
        QoS::AtLeastOnce,
        2,
        false,
        false,
    ));
    match p.recv(Duration::from_secs(5)) {
        Some(Packet::PubAck(r)) => assert_eq!(r.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        other => panic!("{other:?}"),
    }
    let (mut s, a) = connect(worker_addr(base, 0), v5_connect("view-sub", false, 3600));
    assert!(a.session_present);
    let got = drain(&mut s, Duration::from_secs(1));
    assert!(got.iter().any(|(m, _)| m == "seen"), "{got:?}");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The snapshot files of a data dir (`w{N}/snap-{seq}.snap`), sorted.
fn snapshots_of(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for w in std::fs::read_dir(dir).unwrap().flatten() {
        if !w.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(w.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("snap-") {
                v.push(format!("{}/{name}", w.file_name().to_string_lossy()));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn a_start_on_files_that_hold_its_state_keeps_them_and_logs_after_them() {
    let dir = temp_dir("kept");
    let (mut b, base) = Broker::start_with_worker_ports(&dir);
    let (mut s, _) = connect(worker_addr(base, 0), v5_connect("kept-sub", true, 3600));
    subscribe(&mut s, 1, "kept/x", QoS::AtLeastOnce);
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    b.stop();
    let written = snapshots_of(&dir);
    assert_eq!(written.len(), 2, "one snapshot per worker: {written:?}");
    // Offline sessions only, nothing after the snapshots: the start writes none.
    let (mut b, base) = Broker::start_with_worker_ports(&dir);
    assert_eq!(
        snapshots_of(&dir),
        written,
        "the snapshots are kept as they are"
    );
    // The restored exact filter is in the other worker's view (no 0x10), and the message
    // queued for the offline session goes into the log after the kept snapshot.
    let (mut p, _) = connect(worker_addr(base, 1), v5_connect("kept-pub", true, 0));
    p.send(&publish(
        "kept/x",
        "after",
        QoS::AtLeastOnce,
        1,
        false,
        false,
    ));
    match p.recv(Duration::from_secs(5)) {
        Some(Packet::PubAck(r)) => assert_eq!(r.reason, ReasonCode::SUCCESS),
        other => panic!("{other:?}"),
    }
    b.kill();
    let (b, base) = Broker::start_with_worker_ports(&dir);
    let (mut s, a) = connect(worker_addr(base, 0), v5_connect("kept-sub", false, 3600));
    assert!(a.session_present);
    let got = drain(&mut s, Duration::from_secs(1));
    assert_eq!(got, vec![("after".to_string(), false)]);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
