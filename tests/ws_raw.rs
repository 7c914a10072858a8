//! WebSocket listeners (`ws_listen`) over real loopback sockets, driven by a hand-written
//! client for exact control of the bytes: MQTT through the upgrade and binary frames, the
//! hostile inputs (each must end with its HTTP status or close code and leave the broker
//! serving), keep-alive counting WebSocket bytes, the will on a close frame, and
//! `X-Forwarded-For` believed only from `ws_trusted_proxies`.
//!
//! No timed assertions: every wait is bounded, and only what arrives (or that the socket
//! closed) is asserted.
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq::config::Config;
use ringmq::protocol::*;
use support::*;

const T: Duration = Duration::from_secs(10);

fn ws_broker(f: impl FnOnce(&mut Config)) -> (TestBroker, SocketAddr) {
    let b = TestBroker::start_with(1, |c| {
        c.ws_listen = vec!["127.0.0.1:0".parse().unwrap()];
        f(c)
    });
    let addr = b.handle.as_ref().unwrap().ws_addrs()[0];
    (b, addr)
}

fn upgrade_request(path: &str, protocols: Option<&str>, extra: &str) -> String {
    let proto = protocols
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}{extra}\r\n"
    )
}

/// A client frame: FIN as given, masked with a fixed key unless `masked` is false.
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let m = if masked { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(true, 0x2, payload, true)
}

fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_packet(p, v, &mut out);
    out.to_vec()
}

/// What the server sent: a frame, or the end of the stream.
#[derive(Debug, PartialEq)]
enum Got {
    Frame(u8, Vec<u8>),
    Eof,
    Timeout,
}

struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// MQTT bytes of the binary frames received so far, not yet decoded.
    mqtt: BytesMut,
    version: ProtocolVersion,
}

impl WsClient {
    fn tcp(addr: SocketAddr) -> WsClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        WsClient {
            stream,
            buf: Vec::new(),
            mqtt: BytesMut::new(),
            version: ProtocolVersion::V5,
        }
    }

    /// Connect and upgrade with subprotocol `mqtt`; panics unless the answer is 101.
    fn open(addr: SocketAddr, extra: &str) -> WsClient {
        let mut c = WsClient::tcp(addr);
        c.write(upgrade_request("/mqtt", Some("mqtt"), extra).as_bytes());
        let head = c.http_head().expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        assert!(head.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{head}");
        c
    }

    fn write(&mut self, b: &[u8]) {
        self.stream.write_all(b).unwrap();
    }

    /// Read more bytes into `buf`; false on EOF, reset or timeout.
    fn fill(&mut self, deadline: Instant) -> Result<(), Got> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or(Got::Timeout)?;
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => Err(Got::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Err(Got::Timeout)
            }
            Err(_) => Err(Got::Eof),
        }
    }

    /// The HTTP answer's head (up to the blank line), None if the socket ended first.
    fn http_head(&mut self) -> Option<String> {
        let deadline = Instant::now() + T;
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..i + 4).collect();
                return Some(String::from_utf8(head).unwrap());
            }
            self.fill(deadline).ok()?;
        }
    }

    /// The next server frame (servers never mask; a masked one fails the test).
    fn frame(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                let b1 = self.buf[1];
                assert_eq!(b1 & 0x80, 0, "server frames are not masked");
                let (len, at) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let op = self.buf[0] & 0x0f;
                    assert_ne!(self.buf[0] & 0x80, 0, "server frames are whole (FIN)");
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Got::Frame(op, payload);
                }
            }
            if let Err(g) = self.fill(deadline) {
                return g;
            }
        }
    }

    /// The status code of the next frame, which must be a close frame.
    fn close_code(&mut self) -> u16 {
        match self.frame(T) {
            Got::Frame(0x8, p) => u16::from_be_bytes([p[0], p[1]]),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// After the close frame or HTTP error: the server closes the socket.
    fn expect_eof(&mut self) {
        match self.frame(T) {
            Got::Eof => {}
            other => panic!("expected the socket to close, got {other:?}"),
        }
    }

    fn send(&mut self, p: &Packet) {
        let b = binary(&encode(p, self.version));
        self.write(&b);
    }

    /// The next MQTT packet carried by binary frames (pongs are skipped).
    fn recv(&mut self) -> Packet {
        let deadline = Instant::now() + T;
        loop {
            if let Ok(Some((p, n))) = decode_packet(&self.mqtt, Some(self.version), u32::MAX) {
                let _ = self.mqtt.split_to(n);
                return p;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("an MQTT packet in time");
            match self.frame(left) {
                Got::Frame(0x2, p) => self.mqtt.extend_from_slice(&p),
                Got::Frame(0xA, _) => {}
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    fn connect(&mut self, c: Connect) -> ConnAck {
        self.version = c.protocol;
        self.send(&Packet::Connect(Box::new(c)));
        match self.recv() {
            Packet::ConnAck(a) => a,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

/// The broker still answers a fresh WebSocket client end to end.
fn assert_serving(addr: SocketAddr) {
    let mut c = WsClient::open(addr, "");
    let ack = c.connect(connect_packet(ProtocolVersion::V5, "", 60, true));
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Packet::PingResp);
}

fn status(head: &str) -> u16 {
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn mqtt_over_websocket_subscribe_publish_qos0_qos1() {
    let (b, addr) = ws_broker(|_| {});
    for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let mut sub = WsClient::open(addr, "");
        assert_eq!(
            sub.connect(connect_packet(v, "ws-sub", 60, true)).code,
            ReasonCode::SUCCESS
        );
        sub.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(
                "ws/#".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
            properties: Default::default(),
        }));
        assert!(matches!(sub.recv(), Packet::SubAck(_)));
        // The publisher on the plain listener, the subscriber on the WebSocket one.
        let (mut publ, _) = connect(b.addr, connect_packet(v, "tcp-pub", 60, true));
        publ.send(&publish("ws/a", "zero", QoS::AtMostOnce, 0));
        publ.send(&publish("ws/b", "one", QoS::AtLeastOnce, 7));
        for (topic, payload, qos) in [
            ("ws/a", "zero", QoS::AtMostOnce),
            ("ws/b", "one", QoS::AtLeastOnce),
        ] {
            match sub.recv() {
                Packet::Publish(p) => {
                    assert_eq!(
                        (&p.topic[..], &p.payload[..], p.qos),
                        (topic, payload.as_bytes(), qos)
                    );
                    if p.qos == QoS::AtLeastOnce {
                        sub.send(&Packet::PubAck(PubResp::new(p.packet_id)));
                    }
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
        // And the other way: a QoS 1 PUBLISH from the WebSocket client gets its PUBACK.
        sub.send(&publish("ws/c", "back", QoS::AtLeastOnce, 9));
        loop {
            match sub.recv() {
                Packet::PubAck(a) => {
                    assert_eq!(a.packet_id, 9);
                    break;
                }
                Packet::Publish(p) => {
                    assert_eq!(&p.topic[..], "ws/c");
                    if p.qos == QoS::AtLeastOnce {
                        sub.send(&Packet::PubAck(PubResp::new(p.packet_id)));
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(b.metric("ws_handshakes") >= 2);
}

#[test]
fn packets_span_frames_and_frames_carry_several_packets() {
    let (_b, addr) = ws_broker(|_| {});
    let mut c = WsClient::open(addr, "");
    let connect = encode(
        &Packet::Connect(Box::new(connect_packet(
            ProtocolVersion::V5,
            "frag",
            60,
            true,
        ))),
        ProtocolVersion::V5,
    );
    // The CONNECT in a fragmented message of three frames, a ping between two of them.
    let mut bytes = frame(false, 0x2, &connect[..3], true);
    bytes.extend(frame(false, 0x0, &connect[3..8], true));
    bytes.extend(frame(true, 0x9, b"hi", true));
    bytes.extend(frame(true, 0x0, &connect[8..], true));
    c.write(&bytes);
    match c.frame(T) {
        Got::Frame(0xA, p) => assert_eq!(p, b"hi"),
        other => panic!("expected the pong, got {other:?}"),
    }
    assert!(matches!(c.recv(), Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS));
    // SUBSCRIBE, PUBLISH to itself and PINGREQ in one frame.
    let v = ProtocolVersion::V5;
    let mut one = encode(
        &Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("f/x".into(), SubscriptionOptions::default())],
            properties: Default::default(),
        }),
        v,
    );
    one.extend(encode(&publish("f/x", "self", QoS::AtMostOnce, 0), v));
    one.extend(encode(&Packet::PingReq, v));
    c.write(&binary(&one));
    assert!(matches!(c.recv(), Packet::SubAck(_)));
    assert!(matches!(c.recv(), Packet::Publish(p) if &p.payload[..] == b"self"));
    assert_eq!(c.recv(), Packet::PingResp);
}

#[test]
fn subprotocol_is_chosen_from_the_clients_list() {
    let (_b, addr) = ws_broker(|_| {});
    for (offered, chosen) in [
        ("mqtt", "mqtt"),
        ("mqttv3.1", "mqttv3.1"),
        ("chat, mqttv3.1, mqtt", "mqtt"),
    ] {
        let mut c = WsClient::tcp(addr);
        c.write(upgrade_request("/mqtt", Some(offered), "").as_bytes());
        let head = c.http_head().unwrap();
        assert_eq!(status(&head), 101, "{head}");
        assert!(
            head.contains(&format!("Sec-WebSocket-Protocol: {chosen}\r\n")),
            "{offered}: {head}"
        );
    }
}

/// Hostile or wrong inputs: every one ends with its HTTP status or close code and a closed
/// socket, and the broker keeps serving.
#[test]
fn hostile_inputs_end_with_the_right_status_and_never_hang_the_broker() {
    let (b, addr) = ws_broker(|c| {
        c.connect_timeout_secs = 1;
        c.max_packet_size = 1024;
    });
    // HTTP refusals.
    let cases: [(&str, Vec<u8>, u16); 6] = [
        (
            "an MQTT CONNECT instead of an upgrade",
            encode(
                &Packet::Connect(Box::new(connect_packet(ProtocolVersion::V5, "x", 60, true))),
                ProtocolVersion::V5,
            ),
            400,
        ),
        (
            "binary garbage",
            vec![0xff, 0x00, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n'],
            400,
        ),
        (
            "a plain HTTP GET",
            b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
            426,
        ),
        (
            "the wrong path",
            upgrade_request("/other", Some("mqtt"), "").into_bytes(),
            404,
        ),
        (
            "no acceptable subprotocol",
            upgrade_request("/mqtt", Some("chat, superchat"), "").into_bytes(),
            400,
        ),
        (
            "no subprotocol at all",
            upgrade_request("/mqtt", None, "").into_bytes(),
            400,
        ),
    ];
    for (what, bytes, want) in cases {
        let mut c = WsClient::tcp(addr);
        c.write(&bytes);
        let head = c
            .http_head()
            .unwrap_or_else(|| panic!("{what}: no HTTP answer"));
        assert_eq!(status(&head), want, "{what}: {head}");
        assert!(head.contains("Connection: close\r\n"), "{what}: {head}");
        c.expect_eof();
    }
    assert_eq!(b.metric("ws_handshake_failures"), 6);

    // Half a handshake, then silence: the connect timeout closes it, without an answer.
    let mut c = WsClient::tcp(addr);
    c.write(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n");
    c.expect_eof();
    assert!(c.buf.is_empty(), "no answer to half a request");
    assert_eq!(b.metric("connect_timeouts"), 1);

    // Frame errors after a good upgrade: the close code, then the socket closes.
    let mut len63 = vec![0x82, 0x80 | 127];
    len63.extend_from_slice(&(1u64 << 63).to_be_bytes());
    len63.extend_from_slice(&[1, 2, 3, 4]);
    let mut oversize = vec![0x82, 0x80 | 127];
    oversize.extend_from_slice(&(1024u64 + 4096 + 1).to_be_bytes());
    oversize.extend_from_slice(&[1, 2, 3, 4]);
    let frame_cases: [(&str, Vec<u8>, u16); 5] = [
        (
            "an unmasked frame",
            frame(true, 0x2, b"\xc0\x00", false),
            1002,
        ),
        ("a text frame", frame(true, 0x1, b"hello", true), 1003),
        ("a length of 2^63", len63, 1009),
        ("a frame over the size limit", oversize, 1009),
        ("an unknown opcode", frame(true, 0x3, b"", true), 1002),
    ];
    for (what, bytes, want) in frame_cases {
        let mut c = WsClient::open(addr, "");
        c.write(&bytes);
        assert_eq!(c.close_code(), want, "{what}");
        c.expect_eof();
    }
    assert_eq!(b.metric("ws_errors"), 5);
    // An MQTT packet over max_packet_size inside a frame within the WebSocket limit is the
    // MQTT layer's to refuse.
    let mut c = WsClient::open(addr, "");
    c.connect(connect_packet(ProtocolVersion::V5, "big", 60, true));
    c.send(&publish("big", &"x".repeat(2000), QoS::AtMostOnce, 0));
    match c.recv() {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::PACKET_TOO_LARGE),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
    assert_eq!(c.close_code(), 1000);
    c.expect_eof();

    assert_serving(addr);
    // Nothing was left open.
    let deadline = Instant::now() + T;
    while b.metric("connections_current") != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.metric("connections_current"), 0);
}

#[test]
fn broker_close_sends_disconnect_then_close_frame() {
    let (_b, addr) = ws_broker(|_| {});
    let mut c = WsClient::open(addr, "");
    c.connect(connect_packet(ProtocolVersion::V5, "twice", 60, true));
    // A second CONNECT is a protocol error: DISCONNECT 0x82 in a binary frame, then close.
    c.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V5,
        "twice",
        60,
        true,
    ))));
    match c.recv() {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(c.close_code(), 1000);
    c.expect_eof();
}

#[test]
fn client_close_frame_is_answered_and_publishes_the_will() {
    let (b, addr) = ws_broker(|_| {});
    let (mut sub, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V5, "w-sub", 60, true),
    );
    subscribe(&mut sub, 1, "will/#", QoS::AtLeastOnce);
    let mut c = WsClient::open(addr, "");
    let mut cp = connect_packet(ProtocolVersion::V5, "w-ws", 60, true);
    cp.will = Some(will("will/ws", "gone", None));
    c.connect(cp);
    c.write(&frame(true, 0x8, &1001u16.to_be_bytes(), true));
    assert_eq!(c.close_code(), 1001, "the close is echoed");
    c.expect_eof();
    let p = recv_publish(&mut sub, T).expect("the will");
    assert_eq!(&p.payload[..], b"gone");

    // DISCONNECT and the close frame in one write: no will (checked by what comes next:
    // a marker published after it arrives first).
    let mut c = WsClient::open(addr, "");
    let mut cp = connect_packet(ProtocolVersion::V5, "w-ws2", 60, true);
    cp.will = Some(will("will/ws2", "must not come", None));
    c.connect(cp);
    let mut bytes = binary(&encode(
        &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)),
        ProtocolVersion::V5,
    ));
    bytes.extend(frame(true, 0x8, &1000u16.to_be_bytes(), true));
    c.write(&bytes);
    assert_eq!(c.close_code(), 1000);
    c.expect_eof();
    let (mut m, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V5, "marker", 60, true),
    );
    m.send(&publish("will/marker", "after", QoS::AtLeastOnce, 1));
    let p = recv_publish(&mut sub, T).expect("the marker");
    assert_eq!(&p.payload[..], b"after", "no will after DISCONNECT");
}

/// Keep-alive counts every byte from the client: WebSocket pings alone keep a connection with
/// a 1-second keep-alive (1.5 s deadline) open for 4 s; without them it is closed.
#[test]
fn websocket_pings_count_for_keep_alive() {
    let (b, addr) = ws_broker(|_| {});
    let mut c = WsClient::open(addr, "");
    c.connect(connect_packet(ProtocolVersion::V5, "pinger", 1, true));
    let end = Instant::now() + Duration::from_secs(4);
    let mut pongs = 0;
    while Instant::now() < end {
        c.write(&frame(true, 0x9, b"p", true));
        match c.frame(T) {
            Got::Frame(0xA, p) => assert_eq!(p, b"p"),
            other => panic!("expected a pong, got {other:?}"),
        }
        pongs += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(pongs >= 4);
    c.send(&Packet::PingReq);
    assert_eq!(
        c.recv(),
        Packet::PingResp,
        "still open after 4 s of pings only"
    );
    assert_eq!(b.metric("keepalive_expired"), 0);
    drop(c);
    // The control: silence is closed by keep-alive.
    let mut c = WsClient::open(addr, "");
    c.connect(connect_packet(ProtocolVersion::V5, "silent", 1, true));
    match c.recv() {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    assert_eq!(c.close_code(), 1000);
    c.expect_eof();
    assert_eq!(b.metric("keepalive_expired"), 1);
}

// --- X-Forwarded-For ------------------------------------------------------------------------

/// A broker with a password file and a failed-login limit of 1 (so peers are collected):
/// the address that failed is refused at once (0x9F) on its next CONNECT.
fn limited_broker(dir: &std::path::Path, trusted: &[&str]) -> (TestBroker, SocketAddr) {
    let pw = dir.join("passwd");
    ringmq::auth::passwd::set_password(&pw, "alice", b"right").unwrap();
    let trusted: Vec<_> = trusted.iter().map(|t| t.parse().unwrap()).collect();
    ws_broker(|c| {
        c.password_file = Some(pw);
        c.allow_anonymous = Some(true);
        c.auth_fail_burst = 1;
        c.auth_fail_refill_secs = 3600;
        c.ws_trusted_proxies = trusted;
    })
}

fn ws_login(addr: SocketAddr, xff: &str, password: &str) -> ReasonCode {
    let extra = if xff.is_empty() {
        String::new()
    } else {
        format!("X-Forwarded-For: {xff}\r\n")
    };
    let mut c = WsClient::open(addr, &extra);
    let mut cp = connect_packet(ProtocolVersion::V5, "", 60, true);
    cp.username = Some("alice".into());
    cp.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
    c.connect(cp).code
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ringmq-ws-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn forwarded_for_is_the_peer_only_from_a_trusted_proxy() {
    let dir = tmpdir("xff-trusted");
    let (b, addr) = limited_broker(&dir, &["127.0.0.0/8"]);
    // 192.0.2.1 (behind the trusted proxy 127.0.0.1) fails once: blocked.
    assert_eq!(
        ws_login(addr, "192.0.2.1", "wrong"),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(
        ws_login(addr, "192.0.2.1, 127.0.0.1", "right"),
        ReasonCode::CONNECTION_RATE_EXCEEDED
    );
    // Another client behind the same proxy, and the proxy itself, are not.
    assert_eq!(ws_login(addr, "192.0.2.2", "right"), ReasonCode::SUCCESS);
    assert_eq!(ws_login(addr, "", "right"), ReasonCode::SUCCESS);
    assert_eq!(b.metric("auth_rate_limited"), 1);
    drop(b);

    // Untrusted: the header is ignored, the failure counts against 127.0.0.1.
    let dir = tmpdir("xff-untrusted");
    let (b, addr) = limited_broker(&dir, &["10.0.0.0/8"]);
    assert_eq!(
        ws_login(addr, "192.0.2.1", "wrong"),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(
        ws_login(addr, "192.0.2.2", "right"),
        ReasonCode::CONNECTION_RATE_EXCEEDED
    );
    assert_eq!(b.metric("auth_rate_limited"), 1);
    let _ = std::fs::remove_dir_all(dir);
}
