//! PROXY protocol v1/v2 over loopback, broker in-process: a header then MQTT (plain, TLS,
//! WebSocket) is served; garbage, a bad header, silence or a PROXY line on a listener without
//! the setting is closed; the failed-login limit counts the header's source address, not the
//! proxy's.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq::config::Config;
use ringmq::protocol::*;
use ringmq::proxy::V2_SIGNATURE;
use support::*;

const T: Duration = Duration::from_secs(10);

/// A broker whose plain listener expects a PROXY header; its per-worker ports do not.
fn proxy_broker(f: impl FnOnce(&mut Config)) -> TestBroker {
    TestBroker::start_with(2, |c| {
        c.proxy_protocol_listeners = vec!["127.0.0.1:0".parse().unwrap()];
        f(c);
    })
}

fn v1(src: &str, sport: u16) -> Vec<u8> {
    let ip: IpAddr = src.parse().unwrap();
    let (proto, dst) = if ip.is_ipv4() {
        ("TCP4", "127.0.0.1")
    } else {
        ("TCP6", "::1")
    };
    format!("PROXY {proto} {src} {dst} {sport} 1883\r\n").into_bytes()
}

fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(ver_cmd);
    h.push(fam);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

/// A v2 PROXY header for TCP from `src`:`sport`, with a TLV after the addresses.
fn v2_tcp(src: &str, sport: u16) -> Vec<u8> {
    let ip: IpAddr = src.parse().unwrap();
    let mut b = Vec::new();
    let fam = match ip {
        IpAddr::V4(a) => {
            b.extend_from_slice(&a.octets());
            b.extend_from_slice(&[127, 0, 0, 1]);
            0x11
        }
        IpAddr::V6(a) => {
            b.extend_from_slice(&a.octets());
            b.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&1883u16.to_be_bytes());
    // PP2_TYPE_AUTHORITY "example.com": skipped.
    b.extend_from_slice(&[0x02, 0x00, 11]);
    b.extend_from_slice(b"example.com");
    v2(0x21, fam, &b)
}

fn connect_bytes(c: Connect) -> Vec<u8> {
    let v = c.protocol;
    let mut out = BytesMut::new();
    encode_packet(&Packet::Connect(Box::new(c)), v, &mut out);
    out.to_vec()
}

fn login(v: ProtocolVersion, id: &str, user: &str, pw: &str) -> Connect {
    let mut c = connect_packet(v, id, 30, true);
    c.username = Some(ByteString::from(user));
    c.password = Some(Bytes::copy_from_slice(pw.as_bytes()));
    c
}

/// Send `header` and `c` in one write; the CONNACK's code, or why none came.
fn connect_via(addr: SocketAddr, header: &[u8], c: Connect) -> Result<ReasonCode, String> {
    let mut raw = Raw::connect_tcp(addr, c.protocol);
    let bytes = [header, &connect_bytes(c)].concat();
    raw.send_bytes(&bytes).map_err(|e| e.to_string())?;
    match raw.recv_or_end(T)? {
        Packet::ConnAck(a) => Ok(a.code),
        other => Err(format!("expected CONNACK, got {other:?}")),
    }
}

/// Send `bytes` and expect the broker to close without answering any MQTT packet.
fn closed_without_answer(addr: SocketAddr, bytes: &[u8]) {
    let mut raw = Raw::connect_tcp(addr, ProtocolVersion::V311);
    // The write may fail once the broker closed: that is the outcome expected.
    let _ = raw.send_bytes(bytes);
    let (seen, end) = raw.wait_closed(T);
    assert!(
        end.is_some(),
        "not closed: {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert!(seen.is_empty(), "answered {seen:?}");
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

#[test]
fn v1_and_v2_headers_then_connect_get_connack() {
    let b = proxy_broker(|_| {});
    let headers: Vec<(&str, Vec<u8>)> = vec![
        ("v1 TCP4", v1("198.51.100.7", 40000)),
        ("v1 TCP6", v1("2001:db8::7", 40001)),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec()),
        ("v2 TCP4 + TLV", v2_tcp("198.51.100.8", 40002)),
        ("v2 TCP6 + TLV", v2_tcp("2001:db8::8", 40003)),
        ("v2 LOCAL", v2(0x20, 0x00, &[])),
        ("v2 UNSPEC", v2(0x21, 0x00, &[])),
    ];
    for (name, h) in &headers {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let code = connect_via(b.addr, h, connect_packet(v, "p", 30, true));
            assert_eq!(code, Ok(ReasonCode::SUCCESS), "{name} {v:?}");
        }
    }
    // The connection goes on as usual after the header: a round trip.
    let mut raw = Raw::connect_tcp(b.addr, ProtocolVersion::V5);
    raw.send_bytes(&v2_tcp("198.51.100.9", 1)).unwrap();
    raw.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V5,
        "rt",
        30,
        true,
    ))));
    assert!(matches!(raw.recv(T), Some(Packet::ConnAck(_))));
    subscribe(&mut raw, 1, "p/t", QoS::AtLeastOnce);
    raw.send(&publish("p/t", "hi", QoS::AtMostOnce, 0));
    let p = recv_publish(&mut raw, T).expect("own publish back");
    assert_eq!(&p.payload[..], b"hi");
    assert_eq!(b.metric("proxy_errors"), 0);
}

#[test]
fn header_split_over_several_writes() {
    let b = proxy_broker(|_| {});
    for h in [v1("198.51.100.7", 40000), v2_tcp("2001:db8::9", 5)] {
        let bytes = [
            &h[..],
            &connect_bytes(connect_packet(ProtocolVersion::V311, "s", 30, true)),
        ]
        .concat();
        // Byte by byte (the socket may still coalesce some; the broker must not care).
        let mut raw = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
        for byte in &bytes {
            raw.send_bytes(std::slice::from_ref(byte)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            matches!(raw.recv(T), Some(Packet::ConnAck(_))),
            "byte by byte"
        );
        // The header's end and the CONNECT's start in one write.
        let mut raw = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
        let cut = h.len() - 3;
        raw.send_bytes(&bytes[..cut]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        raw.send_bytes(&bytes[cut..h.len() + 4]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        raw.send_bytes(&bytes[h.len() + 4..]).unwrap();
        assert!(
            matches!(raw.recv(T), Some(Packet::ConnAck(_))),
            "in 3 writes"
        );
    }
    assert_eq!(b.metric("proxy_errors"), 0);
}

#[test]
fn garbage_or_a_bad_header_is_closed_and_counted() {
    let b = proxy_broker(|_| {});
    let connect = connect_bytes(connect_packet(ProtocolVersion::V311, "g", 30, true));
    let mut bad_sig = v2_tcp("198.51.100.7", 1);
    bad_sig[5] ^= 0xFF;
    let mut too_long = b"PROXY UNKNOWN ".to_vec();
    too_long.resize(200, b'x');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("MQTT without a header", connect.clone()),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("binary garbage", vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]),
        (
            "v1 bad address",
            b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n".to_vec(),
        ),
        ("v1 too long", too_long),
        ("v2 bad signature", [&bad_sig[..], &connect].concat()),
        ("v2 length over the bound", {
            let mut h = v2(0x21, 0x00, &[]);
            h[14..16].copy_from_slice(&5000u16.to_be_bytes());
            h
        }),
    ];
    for (name, bytes) in &cases {
        eprintln!("case: {name}");
        closed_without_answer(b.addr, bytes);
    }
    let n = cases.len() as u64;
    assert_eq!(wait_metric(&b, "proxy_errors", n), n);
    assert_eq!(b.metric("packets_in"), 0, "nothing reached MQTT");
}

#[test]
fn no_header_within_the_connect_timeout_is_closed() {
    let b = proxy_broker(|c| c.connect_timeout_secs = 1);
    // Silence, and half a header then silence.
    closed_without_answer(b.addr, b"");
    closed_without_answer(b.addr, b"PROXY TCP4 198.51");
    assert_eq!(wait_metric(&b, "proxy_errors", 2), 2);
    assert!(b.metric("connect_timeouts") >= 2);
}

#[test]
fn a_listener_without_proxy_treats_a_proxy_line_as_a_bad_packet() {
    let b = proxy_broker(|_| {});
    // The per-worker ports are plain listeners without the setting.
    let plain = b.worker_addrs[0];
    let h = [
        &v1("198.51.100.7", 40000)[..],
        &connect_bytes(connect_packet(ProtocolVersion::V311, "n", 30, true)),
    ]
    .concat();
    closed_without_answer(plain, &h);
    // And MQTT there works as ever.
    assert_eq!(
        connect_via(
            plain,
            b"",
            connect_packet(ProtocolVersion::V5, "n", 30, true)
        ),
        Ok(ReasonCode::SUCCESS)
    );
    assert_eq!(b.metric("proxy_errors"), 0);
}

struct PasswordFile(PathBuf);

impl PasswordFile {
    fn new(name: &str) -> PasswordFile {
        let dir = std::env::temp_dir().join(format!("ringmq-proxy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ringmq::auth::passwd::set_password(&dir.join("passwd"), "alice", b"apw").unwrap();
        PasswordFile(dir)
    }
}

impl Drop for PasswordFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn failed_login_limit_applies_to_the_header_source() {
    let f = PasswordFile::new("limit");
    let pw = f.0.join("passwd");
    let b = proxy_broker(|c| {
        c.password_file = Some(pw);
        c.auth_fail_burst = 2;
        c.auth_fail_refill_secs = 3600;
    });
    let v5 = ProtocolVersion::V5;
    let good = || login(v5, "a", "alice", "apw");
    let bad = || login(v5, "a", "alice", "wrong");
    // Every connection comes from 127.0.0.1; the headers name two different clients.
    let mallory = v1("198.51.100.66", 5000);
    let mallory_v2 = v2_tcp("198.51.100.66", 5001);
    let carol = v2_tcp("203.0.113.5", 5000);
    assert_eq!(
        connect_via(b.addr, &mallory, bad()),
        Ok(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
    );
    assert_eq!(
        connect_via(b.addr, &mallory_v2, bad()),
        Ok(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
    );
    // Out of tokens: refused even with the right password, whichever header version.
    assert_eq!(
        connect_via(b.addr, &mallory, good()),
        Ok(ReasonCode::CONNECTION_RATE_EXCEEDED)
    );
    assert_eq!(
        connect_via(b.addr, &mallory_v2, good()),
        Ok(ReasonCode::CONNECTION_RATE_EXCEEDED)
    );
    // Another client behind the same proxy is not affected, nor the proxy's own address
    // (a LOCAL header, and the plain per-worker port).
    assert_eq!(connect_via(b.addr, &carol, good()), Ok(ReasonCode::SUCCESS));
    assert_eq!(
        connect_via(b.addr, &v2(0x20, 0x00, &[]), good()),
        Ok(ReasonCode::SUCCESS)
    );
    assert_eq!(
        connect_via(b.worker_addrs[1], b"", good()),
        Ok(ReasonCode::SUCCESS)
    );
    assert_eq!(b.metric("auth_failures"), 2);
    assert_eq!(b.metric("auth_rate_limited"), 2);
}

/// A self-signed certificate for localhost in a temporary directory.
fn self_signed(name: &str) -> (PathBuf, rcgen::CertifiedKey) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("proxy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
    (dir, ck)
}

#[test]
fn tls_listener_with_proxy_header_then_handshake() {
    let (dir, ck) = self_signed("tls");
    let b = TestBroker::start_with(1, |c| {
        c.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls_cert = Some(dir.join("cert.pem"));
        c.tls_key = Some(dir.join("key.pem"));
        c.proxy_protocol_listeners = c.tls_listen.clone();
    });
    let tls = b.handle.as_ref().unwrap().tls_addrs()[0];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    for header in [v1("198.51.100.7", 1), v2_tcp("2001:db8::1", 2)] {
        let mut tcp = TcpStream::connect(tls).unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        tcp.write_all(&header).unwrap();
        let conn = rustls::ClientConnection::new(
            Arc::new(config.clone()),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(&connect_bytes(connect_packet(
            ProtocolVersion::V311,
            "t",
            30,
            true,
        )))
        .unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted over TLS");
    }
    // Without the header, the ClientHello is not a PROXY header: closed, counted.
    closed_without_answer(tls, b"\x16\x03\x01\x00\x05hello");
    assert_eq!(wait_metric(&b, "proxy_errors", 1), 1);
    assert_eq!(b.metric("tls_handshakes"), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn websocket_listener_with_proxy_header_then_upgrade() {
    let b = TestBroker::start_with(1, |c| {
        c.ws_listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.proxy_protocol_listeners = c.ws_listen.clone();
    });
    let ws = b.handle.as_ref().unwrap().ws_addrs()[0];
    let mut tcp = TcpStream::connect(ws).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let upgrade = "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
    let connect = connect_bytes(connect_packet(ProtocolVersion::V311, "w", 30, true));
    // One binary frame, masked with a zero key (the payload is unchanged).
    let mut frame = vec![0x82, 0x80 | connect.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(&connect);
    tcp.write_all(&[&v2_tcp("198.51.100.7", 1)[..], upgrade.as_bytes(), &frame].concat())
        .unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    let want = b"\x82\x04\x20\x02\x00\x00";
    while !got.ends_with(want) {
        let n = tcp.read(&mut tmp).expect("an answer");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(b.metric("ws_handshakes"), 1);
    assert_eq!(b.metric("proxy_errors"), 0);
}

/// Over a WebSocket listener with PROXY: the header, an upgrade with `X-Forwarded-For: xff`,
/// then a 3.1.1 CONNECT in one frame; the CONNACK's return code byte.
fn ws_login(addr: SocketAddr, header: &[u8], xff: &str, pw: &str) -> u8 {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let upgrade = format!(
        "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\
         X-Forwarded-For: {xff}\r\n\r\n"
    );
    let connect = connect_bytes(login(ProtocolVersion::V311, "x", "alice", pw));
    let mut frame = vec![0x82, 0x80 | connect.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(&connect);
    tcp.write_all(&[header, upgrade.as_bytes(), &frame].concat())
        .unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = &got[end + 4..];
            if body.len() >= 6 {
                assert_eq!(body[..4], [0x82, 0x04, 0x20, 0x02], "a CONNACK frame");
                return body[5];
            }
        }
        let n = tcp.read(&mut tmp).expect("an answer");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
}

/// Load balancer (PROXY) in front of an HTTP proxy (X-Forwarded-For): the forwarded address
/// is believed because the PROXY header's source is a trusted proxy (the socket's own
/// address, 127.0.0.1, is not), and the failed-login limit counts it.
#[test]
fn websocket_forwarded_for_is_trusted_by_the_proxy_header_source() {
    let f = PasswordFile::new("xff");
    let pw = f.0.join("passwd");
    let b = TestBroker::start_with(1, |c| {
        c.ws_listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.proxy_protocol_listeners = c.ws_listen.clone();
        c.ws_trusted_proxies = vec!["198.51.100.7".parse().unwrap()];
        c.password_file = Some(pw);
        c.auth_fail_burst = 1;
        c.auth_fail_refill_secs = 3600;
    });
    let ws = b.handle.as_ref().unwrap().ws_addrs()[0];
    let http_proxy = v1("198.51.100.7", 1000);
    // 3.1.1 return codes: 0 accepted, 3 server unavailable (rate limited), 4 bad password.
    assert_eq!(ws_login(ws, &http_proxy, "203.0.113.1", "wrong"), 4);
    assert_eq!(ws_login(ws, &http_proxy, "203.0.113.1", "apw"), 3);
    assert_eq!(ws_login(ws, &http_proxy, "203.0.113.2", "apw"), 0);
    // From an untrusted source, X-Forwarded-For is ignored: the header's source counts.
    let other = v2_tcp("198.51.100.99", 1000);
    assert_eq!(ws_login(ws, &other, "203.0.113.3", "wrong"), 4);
    assert_eq!(ws_login(ws, &other, "203.0.113.4", "apw"), 3);
    assert_eq!(b.metric("auth_rate_limited"), 2);
}
