//! Authentication and authorization over loopback: password file logins (raw client, rumqttc
//! v4/v5, mosquitto_pub/sub), anonymous policy, the failed-login limit per source address,
//! verification off the event loop, ACL allow/deny for publish, subscribe, wildcard and
//! retained delivery (with %u / %c patterns), and take-over refused across identities.
//!
//! Waits are bounded waits for events; nothing asserts on elapsed time.
mod support;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use ringmq::config::Config;
use ringmq::protocol::*;
use support::*;

const T: Duration = Duration::from_secs(10);

/// A temporary directory with a password file (alice/apw, bob/bpw) and an ACL file.
struct Files {
    dir: PathBuf,
}

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic write open/#
topic write public/#

user bob
topic read public/#
topic read open/#
topic deny open/secret/#

pattern readwrite users/%u/#
pattern read devices/%c/#
pattern write devices/%c/status
";

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("ringmq-auth-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("passwd");
        ringmq::auth::passwd::set_password(&pw, "alice", b"apw").unwrap();
        ringmq::auth::passwd::set_password(&pw, "bob", b"bpw").unwrap();
        std::fs::write(dir.join("acl"), ACL).unwrap();
        Files { dir }
    }
    fn passwd(&self) -> PathBuf {
        self.dir.join("passwd")
    }
    fn acl(&self) -> PathBuf {
        self.dir.join("acl")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn broker(files: &Files, acl: bool, f: impl FnOnce(&mut Config)) -> TestBroker {
    let pw = files.passwd();
    let acl_path = files.acl();
    TestBroker::start_with(2, move |c| {
        c.password_file = Some(pw);
        if acl {
            c.acl_file = Some(acl_path);
        }
        f(c);
    })
}

fn login(v: ProtocolVersion, id: &str, user: Option<&str>, pw: Option<&str>) -> Connect {
    let mut c = connect_packet(v, id, 30, true);
    c.username = user.map(ByteString::from);
    c.password = pw.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    c
}

/// Send a CONNECT and return the CONNACK's code (3.1.1 codes mapped to MQTT 5's).
fn try_connect(addr: SocketAddr, c: Connect) -> (Raw, ReasonCode) {
    let mut raw = Raw::connect_tcp(addr, c.protocol);
    raw.send(&Packet::Connect(Box::new(c)));
    match raw.recv(T) {
        Some(Packet::ConnAck(a)) => (raw, a.code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn ok_login(addr: SocketAddr, v: ProtocolVersion, id: &str, user: &str, pw: &str) -> Raw {
    let (raw, code) = try_connect(addr, login(v, id, Some(user), Some(pw)));
    assert_eq!(code, ReasonCode::SUCCESS, "{user} login");
    raw
}

/// Connect from a chosen loopback source address (127.0.0.x).
fn connect_from(src: &str, addr: SocketAddr, c: Connect) -> ReasonCode {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: IpAddr = src.parse().unwrap();
    s.bind(&SocketAddr::new(src, 0).into()).unwrap();
    s.connect(&addr.into()).unwrap();
    let stream: TcpStream = s.into();
    let mut raw = Raw::from_stream(stream, c.protocol);
    raw.send(&Packet::Connect(Box::new(c)));
    match raw.recv(T) {
        Some(Packet::ConnAck(a)) => a.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn ping(raw: &mut Raw) {
    raw.send(&Packet::PingReq);
    loop {
        match raw.recv(T) {
            Some(Packet::PingResp) => return,
            Some(_) => continue,
            None => panic!("no PINGRESP"),
        }
    }
}

fn publish_retained(topic: &str, payload: &str) -> Packet {
    let mut p = publish(topic, payload, QoS::AtMostOnce, 0);
    if let Packet::Publish(ref mut x) = p {
        x.retain = true;
    }
    p
}

fn sub_codes(raw: &mut Raw, pid: u16, filters: &[&str]) -> Vec<ReasonCode> {
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: pid,
        filters: filters
            .iter()
            .map(|f| {
                (
                    ByteString::from(*f),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        properties: Default::default(),
    }));
    loop {
        match raw.recv(T) {
            Some(Packet::SubAck(s)) => {
                assert_eq!(s.packet_id, pid);
                return s.reasons;
            }
            Some(_) => continue,
            None => panic!("no SUBACK"),
        }
    }
}

fn topic_of(p: &Publish) -> String {
    p.topic.to_string()
}

// --- authentication -------------------------------------------------------------------------

#[test]
fn password_logins_both_versions() {
    let f = Files::new("logins");
    // No failed-login limit here (see failed_logins_are_limited_per_source_address).
    let b = broker(&f, false, |c| c.auth_fail_burst = 0);
    for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let mut a = ok_login(b.addr, v, "c-alice", "alice", "apw");
        ping(&mut a);
        ok_login(b.addr, v, "c-bob", "bob", "bpw");
        for (user, pw) in [
            (Some("alice"), Some("wrong")),
            (Some("alice"), Some("bpw")),
            (Some("nobody"), Some("apw")),
            (Some("alice"), None),
        ] {
            let (mut raw, code) = try_connect(b.addr, login(v, "c-x", user, pw));
            assert_eq!(
                code,
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                "{v:?} {user:?}"
            );
            assert!(raw.wait_closed(T).1.is_some(), "closed after the refusal");
        }
        // Anonymous: refused by default once a password file is set (0x87 / 3.1.1 0x05).
        let (_, code) = try_connect(b.addr, login(v, "c-anon", None, None));
        assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{v:?}");
    }
    assert_eq!(b.metric("auth_failures"), 8);
    assert_eq!(b.metric("protocol_errors"), 0);
}

#[test]
fn anonymous_allowed_when_configured() {
    let f = Files::new("anon");
    let b = broker(&f, false, |c| c.allow_anonymous = Some(true));
    for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let (mut raw, code) = try_connect(b.addr, login(v, "anon", None, None));
        assert_eq!(code, ReasonCode::SUCCESS);
        ping(&mut raw);
        // A wrong password is still refused.
        let (_, code) = try_connect(b.addr, login(v, "c", Some("bob"), Some("x")));
        assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    }
    // Without a password file, anonymous and any user name are accepted (the default).
    let open = TestBroker::start(1);
    let (_, code) = try_connect(
        open.addr,
        login(ProtocolVersion::V5, "c", Some("who"), Some("ever")),
    );
    assert_eq!(code, ReasonCode::SUCCESS);
}

#[test]
fn failed_logins_are_limited_per_source_address() {
    let f = Files::new("ratelimit");
    let b = broker(&f, false, |c| {
        c.auth_fail_burst = 3;
        c.auth_fail_refill_secs = 3600;
    });
    let v5 = ProtocolVersion::V5;
    // A good login does not use up the allowance.
    assert_eq!(
        connect_from(
            "127.0.0.2",
            b.addr,
            login(v5, "g", Some("alice"), Some("apw"))
        ),
        ReasonCode::SUCCESS
    );
    for i in 0..3 {
        let code = connect_from(
            "127.0.0.2",
            b.addr,
            login(v5, "x", Some("alice"), Some("bad")),
        );
        assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD, "attempt {i}");
    }
    // Out of tokens: refused at once, even with the right password, without verification.
    assert_eq!(
        connect_from(
            "127.0.0.2",
            b.addr,
            login(v5, "x", Some("alice"), Some("apw"))
        ),
        ReasonCode::CONNECTION_RATE_EXCEEDED
    );
    assert_eq!(
        connect_from(
            "127.0.0.2",
            b.addr,
            login(ProtocolVersion::V311, "x", Some("alice"), Some("apw"))
        ),
        ReasonCode::SERVER_UNAVAILABLE,
        "3.1.1 has no rate code: 0x03 server unavailable"
    );
    assert_eq!(b.metric("auth_failures"), 3);
    assert_eq!(b.metric("auth_rate_limited"), 2);
    // Another address is not affected.
    assert_eq!(
        connect_from(
            "127.0.0.3",
            b.addr,
            login(v5, "y", Some("alice"), Some("apw"))
        ),
        ReasonCode::SUCCESS
    );
}

#[test]
fn verification_does_not_stall_the_event_loop() {
    // One worker, one verification thread, many CONNECTs waiting for Argon2 (tens of ms each):
    // a client that needs no verification is served by the same worker while they are still
    // queued.
    let f = Files::new("stall");
    let b = broker(&f, false, |c| {
        c.allow_anonymous = Some(true);
        c.auth_fail_burst = 0;
    });
    let n = 48;
    let w0 = b.worker_addrs[0];
    let mut waiting: Vec<Raw> = (0..n)
        .map(|i| {
            let mut r = Raw::connect_tcp(w0, ProtocolVersion::V5);
            let c = login(
                ProtocolVersion::V5,
                &format!("w{i}"),
                Some("bob"),
                Some("bpw"),
            );
            r.send(&Packet::Connect(Box::new(c)));
            r
        })
        .collect();
    let (mut anon, code) = try_connect(w0, login(ProtocolVersion::V5, "anon", None, None));
    assert_eq!(code, ReasonCode::SUCCESS);
    ping(&mut anon);
    // The last verification cannot have finished: it waits behind the other n - 1.
    let last = waiting.last_mut().unwrap();
    last.stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    let r = std::io::Read::read(&mut last.stream, &mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "last CONNECT already answered ({r:?}): verification is not queued off the loop?"
    );
    last.stream.set_nonblocking(false).unwrap();
    // All of them get their CONNACK eventually.
    for (i, w) in waiting.iter_mut().enumerate() {
        match w.recv(Duration::from_secs(60)) {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, ReasonCode::SUCCESS, "client {i}"),
            other => panic!("client {i}: {other:?}"),
        }
    }
}

// --- rumqttc --------------------------------------------------------------------------------

/// Run a rumqttc event loop on a thread; incoming packets (Debug text) or the first error.
fn rumqttc_events(
    mut next: impl FnMut() -> Option<Result<String, String>> + Send + 'static,
) -> mpsc::Receiver<Result<String, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(ev) = next() {
            let stop = ev.is_err();
            if tx.send(ev).is_err() || stop {
                break;
            }
        }
    });
    rx
}

fn first_connack(rx: &mpsc::Receiver<Result<String, String>>) -> Result<String, String> {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("event in time");
        match rx.recv_timeout(left).expect("rumqttc event") {
            Ok(p) if p.starts_with("ConnAck") => return Ok(p),
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn rumqttc_v5(
    addr: SocketAddr,
    user: &str,
    pw: &str,
) -> (rumqttc::v5::Client, mpsc::Receiver<Result<String, String>>) {
    use rumqttc::v5::{Client, Event, MqttOptions};
    let mut o = MqttOptions::new(
        format!("r5-{user}-{pw}"),
        addr.ip().to_string(),
        addr.port(),
    );
    o.set_credentials(user, pw);
    let (client, mut conn) = Client::new(o, 16);
    let rx = rumqttc_events(move || {
        conn.iter().next().map(|ev| match ev {
            Ok(Event::Incoming(p)) => Ok(format!("{p:?}")),
            Ok(Event::Outgoing(_)) => Ok(String::new()),
            Err(e) => Err(format!("{e:?}")),
        })
    });
    (client, rx)
}

fn rumqttc_v4(
    addr: SocketAddr,
    user: &str,
    pw: &str,
) -> (rumqttc::Client, mpsc::Receiver<Result<String, String>>) {
    use rumqttc::{Client, Event, MqttOptions};
    let mut o = MqttOptions::new(
        format!("r4-{user}-{pw}"),
        addr.ip().to_string(),
        addr.port(),
    );
    o.set_credentials(user, pw);
    let (client, mut conn) = Client::new(o, 16);
    let rx = rumqttc_events(move || {
        conn.iter().next().map(|ev| match ev {
            Ok(Event::Incoming(p)) => Ok(format!("{p:?}")),
            Ok(Event::Outgoing(_)) => Ok(String::new()),
            Err(e) => Err(format!("{e:?}")),
        })
    });
    (client, rx)
}

#[test]
fn rumqttc_v5_and_v4_logins_and_acl() {
    let f = Files::new("rumqttc");
    let b = broker(&f, true, |_| {});
    // v5
    let (c, rx) = rumqttc_v5(b.addr, "bob", "bpw");
    assert!(first_connack(&rx).unwrap().contains("Success"));
    c.subscribe("alice/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .unwrap();
    // rumqttc v5 reports a refused filter as an error of its event loop.
    loop {
        match rx.recv_timeout(T).expect("SUBACK") {
            Ok(ev) if ev.starts_with("SubAck") => {
                assert!(ev.contains("NotAuthorized"), "{ev}");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                assert!(e.contains("NotAuthorized"), "{e}");
                break;
            }
        }
    }
    let (_c, rx) = rumqttc_v5(b.addr, "bob", "nope");
    let e = first_connack(&rx).unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "{e}");
    // v4
    let (c, rx) = rumqttc_v4(b.addr, "bob", "bpw");
    assert!(first_connack(&rx).unwrap().contains("Success"));
    c.subscribe("alice/#", rumqttc::QoS::AtLeastOnce).unwrap();
    loop {
        let ev = rx.recv_timeout(T).expect("SUBACK").unwrap();
        if ev.starts_with("SubAck") {
            assert!(ev.contains("Failure"), "{ev}");
            break;
        }
    }
    let (_c, rx) = rumqttc_v4(b.addr, "alice", "bpw");
    let e = first_connack(&rx).unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "{e}");
}

// --- mosquitto clients ----------------------------------------------------------------------

fn mosquitto_pub(addr: SocketAddr, args: &[&str]) -> std::process::Output {
    Command::new("mosquitto_pub")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn mosquitto_clients_login_and_acl() {
    if !have_mosquitto() {
        return;
    }
    let f = Files::new("mosquitto");
    let b = broker(&f, true, |_| {});
    for ver in ["mqttv5", "mqttv311"] {
        let ok = mosquitto_pub(
            b.addr,
            &[
                "-V", ver, "-u", "alice", "-P", "apw", "-t", "alice/x", "-m", "1",
            ],
        );
        assert!(
            ok.status.success(),
            "{ver}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let bad = mosquitto_pub(
            b.addr,
            &[
                "-V", ver, "-u", "alice", "-P", "no", "-t", "alice/x", "-m", "1",
            ],
        );
        assert!(!bad.status.success(), "{ver}: a bad password must fail");
        let anon = mosquitto_pub(b.addr, &["-V", ver, "-t", "alice/x", "-m", "1"]);
        assert!(!anon.status.success(), "{ver}: anonymous must fail");
    }
    // mosquitto_sub as bob on open/#: the denied topic is filtered at delivery.
    let mut alice = ok_login(b.addr, ProtocolVersion::V5, "m-alice", "alice", "apw");
    alice.send(&publish_retained("open/ready", "r"));
    ping(&mut alice);
    let mut child = Command::new("mosquitto_sub")
        .args([
            "-h",
            &b.addr.ip().to_string(),
            "-p",
            &b.addr.port().to_string(),
        ])
        .args([
            "-V", "mqttv5", "-u", "bob", "-P", "bpw", "-t", "open/#", "-v", "-C", "2", "-W", "10",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "open/ready r");
    alice.send(&publish("open/secret/x", "s", QoS::AtMostOnce, 0));
    alice.send(&publish("open/ok", "k", QoS::AtMostOnce, 0));
    ping(&mut alice);
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "open/ok k");
    assert!(child.wait().unwrap().success());
}

// --- authorization --------------------------------------------------------------------------

#[test]
fn acl_publish_deny_answers_per_version() {
    let f = Files::new("acl-pub");
    let b = broker(&f, true, |_| {});
    // bob watches everything he may read under users/bob (pattern %u).
    let mut watcher = ok_login(b.addr, ProtocolVersion::V5, "watch", "bob", "bpw");
    assert_eq!(
        sub_codes(&mut watcher, 1, &["users/bob/#"]),
        vec![ReasonCode(1)]
    );
    // v5: denied QoS 1 / 2 get 0x87, QoS 0 is dropped silently.
    let mut a5 = ok_login(b.addr, ProtocolVersion::V5, "a5", "alice", "apw");
    a5.send(&publish("users/bob/in", "q1", QoS::AtLeastOnce, 1));
    match a5.recv(T) {
        Some(Packet::PubAck(r)) => {
            assert_eq!((r.packet_id, r.reason), (1, ReasonCode::NOT_AUTHORIZED))
        }
        other => panic!("{other:?}"),
    }
    a5.send(&publish("users/bob/in", "q2", QoS::ExactlyOnce, 2));
    match a5.recv(T) {
        Some(Packet::PubRec(r)) => {
            assert_eq!((r.packet_id, r.reason), (2, ReasonCode::NOT_AUTHORIZED))
        }
        other => panic!("{other:?}"),
    }
    a5.send(&publish("users/bob/in", "q0", QoS::AtMostOnce, 0));
    ping(&mut a5);
    // 3.1.1: acknowledged as usual, not forwarded.
    let mut a3 = ok_login(b.addr, ProtocolVersion::V311, "a3", "alice", "apw");
    a3.send(&publish("users/bob/in", "v3q1", QoS::AtLeastOnce, 3));
    match a3.recv(T) {
        Some(Packet::PubAck(r)) => assert_eq!(r.packet_id, 3),
        other => panic!("{other:?}"),
    }
    a3.send(&publish("users/bob/in", "v3q2", QoS::ExactlyOnce, 4));
    match a3.recv(T) {
        Some(Packet::PubRec(r)) => assert_eq!(r.packet_id, 4),
        other => panic!("{other:?}"),
    }
    a3.send(&Packet::PubRel(PubResp::new(4)));
    match a3.recv(T) {
        Some(Packet::PubComp(r)) => assert_eq!((r.packet_id, r.reason), (4, ReasonCode::SUCCESS)),
        other => panic!("{other:?}"),
    }
    a3.send(&publish("users/bob/in", "v3q0", QoS::AtMostOnce, 0));
    ping(&mut a3);
    // bob may write his own %u tree: only this one arrives.
    let mut bob = ok_login(b.addr, ProtocolVersion::V311, "bob2", "bob", "bpw");
    bob.send(&publish("users/bob/in", "mine", QoS::AtLeastOnce, 5));
    match bob.recv(T) {
        Some(Packet::PubAck(r)) => assert_eq!(r.packet_id, 5),
        other => panic!("{other:?}"),
    }
    let p = recv_publish(&mut watcher, T).expect("allowed message");
    assert_eq!(&p.payload[..], b"mine", "no denied message before it");
    // %c: a client may write devices/<its id>/status, not another's.
    let mut dev = ok_login(b.addr, ProtocolVersion::V5, "dev1", "bob", "bpw");
    dev.send(&publish("devices/dev1/status", "up", QoS::AtLeastOnce, 6));
    match dev.recv(T) {
        // Allowed; nobody subscribes to it: 0x10 No matching subscribers.
        Some(Packet::PubAck(r)) => assert_eq!(r.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        other => panic!("{other:?}"),
    }
    dev.send(&publish("devices/dev2/status", "up", QoS::AtLeastOnce, 7));
    match dev.recv(T) {
        Some(Packet::PubAck(r)) => assert_eq!(r.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("{other:?}"),
    }
}

#[test]
fn acl_subscribe_deny_and_patterns() {
    let f = Files::new("acl-sub");
    let b = broker(&f, true, |c| c.allow_anonymous = Some(true));
    let mut bob = ok_login(b.addr, ProtocolVersion::V5, "dev7", "bob", "bpw");
    let d = ReasonCode::NOT_AUTHORIZED;
    let g = ReasonCode(1);
    assert_eq!(
        sub_codes(
            &mut bob,
            1,
            &[
                "open/#",
                "alice/#",
                "open/secret/#",
                "users/bob/#",
                "users/alice/#"
            ]
        ),
        vec![g, d, d, g, d]
    );
    assert_eq!(
        sub_codes(
            &mut bob,
            2,
            &["devices/dev7/#", "devices/+/x", "#", "$share/g/public/#"]
        ),
        vec![g, d, d, g]
    );
    // 3.1.1: 0x80.
    let mut bob3 = ok_login(b.addr, ProtocolVersion::V311, "b3", "bob", "bpw");
    assert_eq!(
        sub_codes(&mut bob3, 1, &["public/#", "alice/#"]),
        vec![g, ReasonCode(0x80)]
    );
    // Anonymous clients get the rules before the first `user` line (and %c patterns).
    let (mut anon, code) = try_connect(b.addr, login(ProtocolVersion::V5, "anon1", None, None));
    assert_eq!(code, ReasonCode::SUCCESS);
    assert_eq!(
        sub_codes(
            &mut anon,
            1,
            &["public/#", "open/#", "users/+/x", "devices/anon1/a"]
        ),
        vec![g, d, d, g]
    );
    // Will topics need write access: refused at CONNECT.
    let mut c = login(ProtocolVersion::V5, "willy", Some("bob"), Some("bpw"));
    c.will = Some(will("alice/will", "x", None));
    assert_eq!(try_connect(b.addr, c).1, d);
    let mut c = login(ProtocolVersion::V5, "willy", Some("bob"), Some("bpw"));
    c.will = Some(will("users/bob/will", "x", None));
    assert_eq!(try_connect(b.addr, c).1, ReasonCode::SUCCESS);
}

#[test]
fn acl_wildcard_and_retained_delivery_filtered() {
    let f = Files::new("acl-deliver");
    let b = broker(&f, true, |_| {});
    let mut alice = ok_login(b.addr, ProtocolVersion::V5, "alice1", "alice", "apw");
    // Retained on both an allowed and a denied topic, before bob subscribes.
    alice.send(&publish_retained("open/secret/r", "hidden"));
    alice.send(&publish_retained("open/r", "visible"));
    ping(&mut alice);
    for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let mut bob = ok_login(b.addr, v, "bob-sub", "bob", "bpw");
        assert_eq!(sub_codes(&mut bob, 1, &["open/#"]), vec![ReasonCode(1)]);
        let p = recv_publish(&mut bob, T).expect("retained");
        assert_eq!((topic_of(&p).as_str(), p.retain), ("open/r", true));
        for t in ["open/a", "open/secret/x", "open/secret", "open/b"] {
            alice.send(&publish(t, t, QoS::AtLeastOnce, 9));
            match alice.recv(T) {
                Some(Packet::PubAck(r)) => assert_eq!(r.reason, ReasonCode::SUCCESS, "{t}"),
                other => panic!("{other:?}"),
            }
        }
        // `open/secret/#` also denies `open/secret` (a `#` matches its parent level).
        let got: Vec<String> = (0..2)
            .map(|_| topic_of(&recv_publish(&mut bob, T).expect("message")))
            .collect();
        assert_eq!(got, ["open/a", "open/b"]);
    }
    assert!(b.metric("acl_denied") >= 3);
}

// --- take-over ------------------------------------------------------------------------------

#[test]
fn takeover_refused_across_identities() {
    let f = Files::new("takeover");
    let b = broker(&f, false, |c| {
        c.allow_anonymous = Some(true);
        c.refuse_takeover_by_other_user = true;
        c.auth_fail_burst = 0;
    });
    for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let id = format!("owned-{v:?}");
        let mut c = login(v, &id, Some("alice"), Some("apw"));
        c.clean_start = false;
        let (mut alice, code) = try_connect(b.worker_addrs[0], c);
        assert_eq!(code, ReasonCode::SUCCESS);
        // Anonymous, another user, and alice's name with a wrong password: all refused, on
        // the owner's worker and on the other one.
        for w in &b.worker_addrs {
            let (_, code) = try_connect(*w, login(v, &id, None, None));
            assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "anonymous");
            let (_, code) = try_connect(*w, login(v, &id, Some("bob"), Some("bpw")));
            assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "bob");
            let (_, code) = try_connect(*w, login(v, &id, Some("alice"), Some("bad")));
            assert_eq!(
                code,
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                "wrong password"
            );
        }
        // The owner is still connected.
        ping(&mut alice);
        // alice herself may take over.
        let mut c = login(v, &id, Some("alice"), Some("apw"));
        c.clean_start = false;
        let (mut again, code) = try_connect(b.worker_addrs[1], c);
        assert_eq!(code, ReasonCode::SUCCESS);
        ping(&mut again);
        assert!(
            alice.wait_closed(T).1.is_some(),
            "old connection taken over"
        );
    }
}

// --- the binary -----------------------------------------------------------------------------

#[test]
fn binary_passwd_subcommand_flags_and_no_secret_in_logs() {
    use std::io::Write;
    let bin = env!("CARGO_BIN_EXE_ringmq");
    let f = Files::new("binary");
    let pw = f.dir.join("passwd-bin");
    let pw_s = pw.to_str().unwrap();
    let mut child = Command::new(bin)
        .args(["passwd", pw_s, "carol"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"c4rol-pass\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.starts_with("carol:$argon2id$"), "{text}");
    assert!(!text.contains("c4rol-pass"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut broker = Command::new(bin)
        .args(["--listen", &addr.to_string(), "--workers", "1", "--no-pin"])
        .args(["--password-file", pw_s])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = broker.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + T;
    while !log.iter().any(|l: &String| l.contains("listening on")) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("broker started");
        log.push(rx.recv_timeout(left).expect("broker log line"));
    }
    let (_ok, code) = try_connect(
        addr,
        login(
            ProtocolVersion::V5,
            "bin1",
            Some("carol"),
            Some("c4rol-pass"),
        ),
    );
    assert_eq!(code, ReasonCode::SUCCESS);
    let (_, code) = try_connect(
        addr,
        login(
            ProtocolVersion::V311,
            "bin2",
            Some("carol"),
            Some("hunter2-SECRET"),
        ),
    );
    assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_, code) = try_connect(addr, login(ProtocolVersion::V5, "bin3", None, None));
    assert_eq!(code, ReasonCode::NOT_AUTHORIZED);
    let st = Command::new("kill")
        .args(["-TERM", &broker.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(broker.wait().unwrap().success());
    reader.join().unwrap();
    log.extend(rx.try_iter());
    let all = log.join("\n");
    assert!(all.contains("login failed"), "{all}");
    assert!(all.contains("carol"), "{all}");
    assert!(
        !all.contains("hunter2-SECRET"),
        "password in the log:\n{all}"
    );
    assert!(!all.contains("c4rol-pass"), "password in the log:\n{all}");
}

// --- reload (SIGHUP) --------------------------------------------------------------------------

#[test]
fn reload_applies_new_passwords_and_acl_to_new_and_existing_connections() {
    let f = Files::new("reload");
    let b = broker(&f, true, |c| c.auth_fail_burst = 0);
    let handle = b.handle.as_ref().unwrap();
    // Before: alice may write alice/#; bob reads open/#.
    let mut bob = ok_login(b.addr, ProtocolVersion::V5, "r-bob", "bob", "bpw");
    assert_eq!(sub_codes(&mut bob, 1, &["open/#"]), vec![ReasonCode(1)]);
    let mut alice = ok_login(b.addr, ProtocolVersion::V5, "r-alice", "alice", "apw");
    let pub_code = |a: &mut Raw, topic: &str, pid: u16| {
        a.send(&publish(topic, "x", QoS::AtLeastOnce, pid));
        loop {
            match a.recv(T) {
                Some(Packet::PubAck(r)) => return r.reason,
                Some(_) => continue,
                None => panic!("no PUBACK"),
            }
        }
    };
    // Allowed (nobody subscribes to alice/x: 0x10 No matching subscribers).
    let allowed = ReasonCode::NO_MATCHING_SUBSCRIBERS;
    assert_eq!(pub_code(&mut alice, "alice/x", 1), allowed);
    // Delivered to bob while the old rules hold.
    assert_eq!(pub_code(&mut alice, "open/a", 2), ReasonCode::SUCCESS);
    assert_eq!(topic_of(&recv_publish(&mut bob, T).unwrap()), "open/a");

    // A broken ACL file: the reload fails, nothing changes.
    std::fs::write(f.acl(), "user alice\ntopic bogus alice/#\n").unwrap();
    let err = handle.reload_auth().unwrap_err();
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(pub_code(&mut alice, "alice/x", 3), allowed);

    // New rules: alice may no longer write alice/#, bob may no longer read open/#; and
    // alice's password changes.
    std::fs::write(
        f.acl(),
        "user alice\ntopic write open/#\ntopic readwrite shared/#\nuser bob\ntopic read shared/#\n",
    )
    .unwrap();
    ringmq::auth::passwd::set_password(&f.passwd(), "alice", b"new-apw").unwrap();
    handle.reload_auth().unwrap();
    // The workers rebind on their next tick: wait until alice's existing connection sees it.
    let t = std::time::Instant::now();
    let mut pid = 10;
    while pub_code(&mut alice, "alice/x", pid) == allowed {
        assert!(
            t.elapsed() < T,
            "the existing connection never got the new ACL"
        );
        std::thread::sleep(Duration::from_millis(20));
        pid += 1;
    }
    assert_eq!(
        pub_code(&mut alice, "alice/x", 1000),
        ReasonCode::NOT_AUTHORIZED
    );
    // bob's subscription from before stays, but what it no longer may read is not delivered
    // (it still matches: 0x00, not 0x10).
    assert_eq!(pub_code(&mut alice, "open/b", 1001), ReasonCode::SUCCESS);
    assert!(recv_publish(&mut bob, Duration::from_millis(300)).is_none());
    assert_eq!(sub_codes(&mut bob, 2, &["shared/#"]), vec![ReasonCode(1)]);
    assert_eq!(pub_code(&mut alice, "shared/c", 1002), ReasonCode::SUCCESS);
    assert_eq!(topic_of(&recv_publish(&mut bob, T).unwrap()), "shared/c");
    // New connections: the new password, not the old one.
    let (_, code) = try_connect(
        b.addr,
        login(ProtocolVersion::V5, "r-old", Some("alice"), Some("apw")),
    );
    assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    ok_login(b.addr, ProtocolVersion::V311, "r-new", "alice", "new-apw");
    ping(&mut bob);
}
