//! Durable sessions (`--data-dir`): the broker binary is killed with SIGKILL at random
//! moments under QoS 1 and QoS 2 load and restarted on the same data dir; what it
//! acknowledged must be there. Clients: the raw client of `support` (exact control of packet
//! ids, DUP and the QoS 2 flow) and mosquitto_pub/mosquitto_sub.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmq::protocol::*;
use support::{connect, connect_packet, subscribe, Raw};

/// The broker binary on a data dir.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ringmq-dur-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Broker {
    fn start(dir: &Path, extra: &[&str]) -> Broker {
        Self::start_on(dir, free_port(), extra)
    }

    fn start_on(dir: &Path, port: u16, extra: &[&str]) -> Broker {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.with_extension(format!("{port}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["--listen", &addr.to_string(), "--workers", "2", "--no-pin"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ringmq runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "broker did not start on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, addr }
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
fn crash_round(dir: &Path, kill_after: usize, pace: &mut u64) {
    let mut b = Broker::start(dir, &[]);
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

    let b = Broker::start(dir, &[]);
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
            _ => q == QoS::ExactlyOnce && !acks.pubrec.contains(&pid),
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
        match qos_of(i) {
            QoS::ExactlyOnce => assert_eq!(c, 1, "QoS 2 {m} delivered {c} times"),
            _ => assert!(c >= 1, "QoS 1 {m} lost"),
        }
    }
    // The online one: everything, duplicates flagged DUP.
    let (mut on, ack) = connect(addr, v5_connect("on-sub", false, 3600));
    assert!(ack.session_present, "online subscriber's session lost");
    let after = drain(&mut on, Duration::from_secs(2));
    let mut seen: HashSet<String> = on_before.iter().map(|(m, _)| m.clone()).collect();
    for (m, dup) in &after {
        if !seen.insert(m.clone()) {
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
    for round in 0..3 {
        let dir = temp_dir(&format!("crash{round}"));
        let kill_after = 20 + (next(&mut r) % (N as u64 - 40)) as usize;
        eprintln!("round {round}: kill after {kill_after} acks");
        crash_round(&dir, kill_after, &mut r);
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
    let port = free_port();
    let mut b = Broker::start_on(&dir, port, &["--durability", "batched"]);
    let p = port.to_string();
    let sub = |extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &p, "-V", "mqttv311", "-q", "1"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Subscribe with a persistent session, leave.
    let out = sub(&["-c", "-i", "mq-sub", "-t", "mq/#", "-W", "1"]);
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
    let _b = Broker::start_on(&dir, port, &["--durability", "batched"]);
    let out = sub(&[
        "-c", "-i", "mq-sub", "-t", "mq/#", "-W", "2", "-C", "6", "-v",
    ]);
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
