//! TLS listeners with real clients over loopback. Certificates are generated at test time with
//! rcgen: a CA, a server certificate for localhost/127.0.0.1, a client certificate (CN
//! "alice"), an expired server certificate, and a second CA with its own server and client
//! certificates.
//!
//! Clients: rumqttc 0.24 (rustls 0.22 on its side), mosquitto_pub / mosquitto_sub (OpenSSL;
//! those tests skip with a message when the tools are missing), and the raw test client on the
//! plain listener beside the TLS one.
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use ringmq::config::{CertUsername, Config};
use support::*;

const T: Duration = Duration::from_secs(10);

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn make_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// Write `<name>.pem` and `<name>.key`, a leaf signed by `ca`.
fn leaf(dir: &Path, name: &str, ca: &Ca, cn: &str, server: bool, expired: bool) {
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = if server {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else if cn.is_empty() {
        vec![]
    } else {
        vec![format!("{cn}.example")]
    };
    let mut p = CertificateParams::new(sans).unwrap();
    // (rcgen's default subject has a CN of its own.)
    p.distinguished_name = rcgen::DistinguishedName::new();
    if !cn.is_empty() {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    if expired {
        p.not_before = date_time_ymd(2000, 1, 1);
        p.not_after = date_time_ymd(2001, 1, 1);
    }
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// The test PKI, generated once per test binary run.
fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/ (cargo's scratch directory for integration tests), one per process.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = make_ca("ringmq test CA");
        std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
        leaf(&dir, "server", &ca, "localhost", true, false);
        leaf(&dir, "expired", &ca, "localhost", true, true);
        leaf(&dir, "alice", &ca, "alice", false, false);
        leaf(&dir, "nameless", &ca, "", false, false);
        let other = make_ca("some other CA");
        std::fs::write(dir.join("other-ca.pem"), other.cert.pem()).unwrap();
        leaf(&dir, "other-server", &other, "localhost", true, false);
        leaf(&dir, "other-client", &other, "mallory", false, false);
        dir
    })
}

fn file(name: &str) -> PathBuf {
    pki().join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(file(name)).unwrap()
}

/// A broker with a plain listener (and per-worker ports) and a TLS listener serving
/// `server.pem` unless `f` says otherwise.
fn tls_broker(workers: usize, f: impl FnOnce(&mut Config)) -> (TestBroker, SocketAddr) {
    let b = TestBroker::start_with(workers, |c| {
        c.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls_cert = Some(file("server.pem"));
        c.tls_key = Some(file("server.key"));
        f(c);
    });
    let tls = b.handle.as_ref().unwrap().tls_addrs()[0];
    (b, tls)
}

/// Wait (bounded) until a counter reaches `at_least`; no timing is asserted.
fn wait_metric(b: &TestBroker, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + T;
    loop {
        let v = b.metric(name);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

mod rq {
    use super::*;
    pub use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

    /// A rumqttc (MQTT 3.1.1) client over TLS: events (or the first error, after which the
    /// event thread stops) arrive on the channel.
    pub struct C {
        pub client: Client,
        events: mpsc::Receiver<Result<Packet, String>>,
    }

    impl C {
        pub fn new(
            id: &str,
            addr: SocketAddr,
            ca: &str,
            client_auth: Option<&str>,
            f: impl FnOnce(&mut MqttOptions),
        ) -> C {
            let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
            o.set_keep_alive(Duration::from_secs(10));
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: read(ca),
                alpn: None,
                client_auth: client_auth
                    .map(|n| (read(&format!("{n}.pem")), read(&format!("{n}.key")))),
            }));
            f(&mut o);
            let (client, mut conn) = Client::new(o, 64);
            let (tx, events) = mpsc::channel();
            std::thread::spawn(move || {
                for ev in conn.iter() {
                    let msg = match ev {
                        Ok(Event::Incoming(p)) => Ok(p),
                        Ok(_) => continue,
                        Err(e) => Err(e.to_string()),
                    };
                    let stop = msg.is_err();
                    if tx.send(msg).is_err() || stop {
                        break;
                    }
                }
            });
            C { client, events }
        }

        /// The first incoming packet or the connection error.
        pub fn first(&self) -> Result<Packet, String> {
            self.events.recv_timeout(T).expect("rumqttc event")
        }

        pub fn expect_connack(&self) {
            match self.first() {
                Ok(Packet::ConnAck(a)) => {
                    assert_eq!(a.code, rumqttc::ConnectReturnCode::Success)
                }
                other => panic!("expected CONNACK, got {other:?}"),
            }
        }

        pub fn expect_tls_failure(&self) -> String {
            match self.first() {
                Err(e) => e,
                Ok(p) => panic!("expected a TLS failure, got {p:?}"),
            }
        }

        /// Skip packets until the connection ends.
        pub fn expect_closed(&self) {
            let deadline = Instant::now() + T;
            loop {
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .expect("connection closed in time");
                if self
                    .events
                    .recv_timeout(left)
                    .expect("rumqttc event")
                    .is_err()
                {
                    return;
                }
            }
        }

        /// The next packet that `pick` accepts (others skipped).
        pub fn wait<R>(&self, mut pick: impl FnMut(Packet) -> Option<R>) -> R {
            let deadline = Instant::now() + T;
            loop {
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .expect("rumqttc event in time");
                let p = self
                    .events
                    .recv_timeout(left)
                    .expect("rumqttc event")
                    .expect("no connection error");
                if let Some(r) = pick(p) {
                    return r;
                }
            }
        }
    }
}

#[test]
fn rumqttc_over_tls_connects_publishes_and_receives() {
    use rq::*;
    let (b, tls) = tls_broker(2, |_| {});
    let c = C::new("tls-1", tls, "ca.pem", None, |o| {
        o.set_max_packet_size(1 << 20, 1 << 20);
    });
    c.expect_connack();
    c.client.subscribe("tls/echo", QoS::AtLeastOnce).unwrap();
    c.wait(|p| matches!(p, Packet::SubAck(_)).then_some(()));
    // Bigger than one TLS record and one provided buffer.
    let big = vec![b'x'; 40_000];
    c.client
        .publish("tls/echo", QoS::AtLeastOnce, false, "hello over tls")
        .unwrap();
    c.client
        .publish("tls/echo", QoS::AtMostOnce, false, big.clone())
        .unwrap();
    let p = c.wait(|p| match p {
        Packet::Publish(p) => Some(p),
        _ => None,
    });
    assert_eq!(&p.payload[..], b"hello over tls");
    let p = c.wait(|p| match p {
        Packet::Publish(p) => Some(p),
        _ => None,
    });
    assert_eq!(&p.payload[..], &big[..]);
    assert_eq!(b.metric("tls_handshakes"), 1);
    assert_eq!(b.metric("tls_handshake_failures"), 0);
}

#[test]
fn client_rejects_a_server_certificate_from_another_ca() {
    use rq::*;
    let (b, tls) = tls_broker(1, |c| {
        c.tls_cert = Some(file("other-server.pem"));
        c.tls_key = Some(file("other-server.key"));
    });
    let c = C::new("wrong-ca", tls, "ca.pem", None, |_| {});
    let e = c.expect_tls_failure();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // The client's alert ends the handshake on the broker side, counted.
    assert!(wait_metric(&b, "tls_handshake_failures", 1) >= 1);
    assert_eq!(b.metric("tls_handshakes"), 0);
    // A client that trusts that CA is served.
    let ok = C::new("right-ca", tls, "other-ca.pem", None, |_| {});
    ok.expect_connack();
}

#[test]
fn client_rejects_an_expired_server_certificate() {
    use rq::*;
    let (b, tls) = tls_broker(1, |c| {
        c.tls_cert = Some(file("expired.pem"));
        c.tls_key = Some(file("expired.key"));
    });
    let c = C::new("expired", tls, "ca.pem", None, |_| {});
    let e = c.expect_tls_failure();
    assert!(e.to_lowercase().contains("expired"), "{e}");
    assert!(wait_metric(&b, "tls_handshake_failures", 1) >= 1);
    // The broker still serves plain clients.
    let (_raw, ack) = connect(
        b.worker_addrs[0],
        connect_packet(ringmq::protocol::ProtocolVersion::V5, "plain", 10, true),
    );
    assert_eq!(ack.code, ringmq::protocol::ReasonCode::SUCCESS);
}

#[test]
fn client_certificate_required_and_its_cn_becomes_the_username() {
    use ringmq::protocol::{ProtocolVersion, ReasonCode};
    use rq::*;
    let (b, tls) = tls_broker(2, |c| {
        c.tls_client_ca = Some(file("ca.pem"));
        c.tls_cert_username = CertUsername::Cn;
        c.refuse_takeover_by_other_user = true;
    });

    // No client certificate: the broker ends the handshake.
    let none = C::new("anon", tls, "ca.pem", None, |_| {});
    none.expect_tls_failure();
    assert!(wait_metric(&b, "tls_handshake_failures", 1) >= 1);
    // A certificate from another CA: refused too.
    let other = C::new("other", tls, "ca.pem", Some("other-client"), |_| {});
    other.expect_tls_failure();
    assert!(wait_metric(&b, "tls_handshake_failures", 2) >= 2);

    // A good certificate (CN alice). The CONNECT claims to be "mallory": the certificate wins.
    let alice = C::new("dev-1", tls, "ca.pem", Some("alice"), |o| {
        o.set_credentials("mallory", "pw");
        o.set_clean_session(false);
    });
    alice.expect_connack();
    assert_eq!(b.metric("tls_handshakes"), 1);
    // A valid certificate without a CN cannot name the user: closed, not let through with the
    // CONNECT's username.
    let nameless = C::new("dev-2", tls, "ca.pem", Some("nameless"), |o| {
        o.set_credentials("mallory", "pw");
    });
    nameless.expect_tls_failure();
    assert!(wait_metric(&b, "tls_handshake_failures", 3) >= 3);
    assert_eq!(b.metric("tls_handshakes"), 1);

    // refuse_takeover_by_other_user compares usernames: a plain client with the same ClientId
    // as user "mallory" is refused (the session's user is "alice"), as user "alice" it takes
    // the session over.
    let mut c = connect_packet(ProtocolVersion::V5, "dev-1", 10, false);
    c.username = Some("mallory".into());
    let (_m, ack) = connect(b.worker_addrs[0], c);
    assert_eq!(ack.code, ReasonCode::NOT_AUTHORIZED);
    let mut c = connect_packet(ProtocolVersion::V5, "dev-1", 10, false);
    c.username = Some("alice".into());
    let (_a, ack) = connect(b.worker_addrs[1], c);
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert!(ack.session_present);
    // The TLS connection was taken over.
    alice.expect_closed();
}

#[test]
fn plain_and_tls_listeners_side_by_side_across_workers() {
    use ringmq::protocol::{ProtocolVersion, QoS as Q};
    use rq::*;
    let (b, tls) = tls_broker(3, |_| {});
    // A plain subscriber on every worker: whichever worker the TLS publisher lands on, the
    // message also crosses to the others.
    let mut subs = Vec::new();
    for (i, &a) in b.worker_addrs.iter().enumerate() {
        let (mut raw, _) = connect(
            a,
            connect_packet(ProtocolVersion::V311, &format!("plain-{i}"), 10, true),
        );
        subscribe(&mut raw, 1, "mix/#", Q::AtLeastOnce);
        subs.push(raw);
    }
    let publ = C::new("tls-pub", tls, "ca.pem", None, |_| {});
    publ.expect_connack();
    publ.client
        .publish("mix/a", QoS::AtLeastOnce, false, "from tls")
        .unwrap();
    publ.wait(|p| matches!(p, Packet::PubAck(_)).then_some(()));
    for raw in &mut subs {
        let p = recv_publish(raw, T).expect("publish from the TLS client");
        assert_eq!(&p.payload[..], b"from tls");
    }
    // And back: a plain publisher reaches a TLS subscriber.
    let sub = C::new("tls-sub", tls, "ca.pem", None, |_| {});
    sub.expect_connack();
    sub.client.subscribe("back", QoS::AtLeastOnce).unwrap();
    sub.wait(|p| matches!(p, Packet::SubAck(_)).then_some(()));
    subs[0].send(&publish("back", "from plain", Q::AtLeastOnce, 7));
    let p = sub.wait(|p| match p {
        Packet::Publish(p) => Some(p),
        _ => None,
    });
    assert_eq!(&p.payload[..], b"from plain");
    assert_eq!(b.metric("tls_handshakes"), 2);
}

fn tls_args(addr: SocketAddr, cert: Option<&str>) -> Vec<String> {
    let mut a = vec![
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
        "--cafile".into(),
        file("ca.pem").display().to_string(),
    ];
    if let Some(n) = cert {
        a.push("--cert".into());
        a.push(file(&format!("{n}.pem")).display().to_string());
        a.push("--key".into());
        a.push(file(&format!("{n}.key")).display().to_string());
    }
    a
}

fn mosquitto_pub(addr: SocketAddr, cert: Option<&str>, args: &[&str]) -> std::process::Output {
    Command::new("mosquitto_pub")
        .args(tls_args(addr, cert))
        .args(args)
        .output()
        .unwrap()
}

/// mosquitto_sub printing the first `count` messages (a retained one published before it starts
/// tells that it is subscribed), bounded by `-W 10`.
fn mosquitto_sub_lines(addr: SocketAddr, cert: Option<&str>, args: &[&str]) -> Vec<String> {
    let mut child = Command::new("mosquitto_sub")
        .args(tls_args(addr, cert))
        .args(["-W", "10"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let lines: Vec<String> = out.lines().map_while(Result::ok).collect();
    let st = child.wait().unwrap();
    assert!(st.success(), "mosquitto_sub {args:?}: {st}");
    lines
}

#[test]
fn mosquitto_clients_over_tls() {
    if !have_mosquitto() {
        return;
    }
    let (b, tls) = tls_broker(2, |_| {});
    let out = mosquitto_pub(
        tls,
        None,
        &["-t", "m/ret", "-m", "retained", "-r", "-q", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The subscriber starts, sees the retained message, then a live one.
    let mut child = Command::new("mosquitto_sub")
        .args(tls_args(tls, None))
        .args(["-W", "10", "-t", "m/#", "-C", "2", "-V", "mqttv5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "retained");
    let out = mosquitto_pub(tls, None, &["-t", "m/live", "-m", "live", "-V", "mqttv5"]);
    assert!(out.status.success());
    assert_eq!(lines.next().unwrap().unwrap(), "live");
    assert!(child.wait().unwrap().success());
    assert!(b.metric("tls_handshakes") >= 3);
}

#[test]
fn mosquitto_clients_with_client_certificates() {
    if !have_mosquitto() {
        return;
    }
    let (b, tls) = tls_broker(2, |c| {
        c.tls_client_ca = Some(file("ca.pem"));
        c.tls_cert_username = CertUsername::Cn;
    });
    // Without a certificate the broker refuses the handshake.
    let out = mosquitto_pub(tls, None, &["-t", "c/x", "-m", "no"]);
    assert!(!out.status.success(), "published without a client cert");
    assert!(wait_metric(&b, "tls_handshake_failures", 1) >= 1);
    // With one it works both ways.
    let out = mosquitto_pub(
        tls,
        Some("alice"),
        &["-t", "c/x", "-m", "with cert", "-r", "-q", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = mosquitto_sub_lines(tls, Some("alice"), &["-t", "c/x", "-C", "1"]);
    assert_eq!(lines, vec!["with cert".to_string()]);
}

#[test]
fn plain_mqtt_on_the_tls_port_is_closed_and_counted() {
    use ringmq::protocol::ProtocolVersion;
    let (b, tls) = tls_broker(1, |_| {});
    let mut raw = Raw::connect_tcp(tls, ProtocolVersion::V311);
    raw.send(&ringmq::protocol::Packet::Connect(Box::new(
        connect_packet(ProtocolVersion::V311, "not-tls", 10, true),
    )));
    // The broker answers with a TLS alert (not MQTT) and closes.
    raw.stream.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw.stream, &mut got);
    assert!(got.len() < 16, "only an alert: {got:?}");
    if !got.is_empty() {
        assert_eq!(got[0], 0x15, "TLS alert record");
    }
    assert!(wait_metric(&b, "tls_handshake_failures", 1) >= 1);
    assert_eq!(b.metric("packets_in"), 0);
}

/// With a password file and `tls_cert_username`, the verified certificate is the
/// authentication (as Mosquitto's use_identity_as_username): its CN is accepted without a
/// password, while on the plain listener the same user name without the password is refused.
#[test]
fn certificate_identity_needs_no_password_but_plain_logins_still_do() {
    use ringmq::protocol::{ProtocolVersion, ReasonCode};
    use rq::*;
    let pw = std::env::temp_dir().join(format!("ringmq-tls-pw-{}", std::process::id()));
    let _ = std::fs::remove_file(&pw);
    ringmq::auth::passwd::set_password(&pw, "alice", b"s3cret").unwrap();
    let (b, tls) = tls_broker(1, |c| {
        c.tls_client_ca = Some(file("ca.pem"));
        c.tls_cert_username = CertUsername::Cn;
        c.password_file = Some(pw.clone());
    });
    let alice = C::new("cert-only", tls, "ca.pem", Some("alice"), |_| {});
    alice.expect_connack();
    let mut c = connect_packet(ProtocolVersion::V5, "plain-alice", 10, true);
    c.username = Some("alice".into());
    let (_p, ack) = connect(b.addr, c);
    assert_eq!(ack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let _ = std::fs::remove_file(&pw);
}
