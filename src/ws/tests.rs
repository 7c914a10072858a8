use super::*;

use proptest::prelude::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455 section 1.3 (SHA-1 of the key and the GUID, base64; checked with Python's
/// hashlib too).
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn conn() -> WsConn {
    WsConn::new(&Arc::new(WsConfig::default()))
}

fn conn_with(max_message: u64) -> WsConn {
    WsConn::new(&Arc::new(WsConfig {
        max_message,
        ..WsConfig::default()
    }))
}

fn request_with(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: broker.example\r\nUpgrade: websocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn request() -> Vec<u8> {
    request_with("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n")
}

fn response(proto: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n"
    )
    .into_bytes()
}

/// A client frame: `b0` is the first byte as is (FIN, RSV, opcode), masked with `mask`.
fn raw_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![b0];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(u8::from(fin) << 7 | opcode, payload, MASK)
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(true, OP_BINARY, payload)
}

/// An open connection (the upgrade answer already checked and dropped).
fn open() -> WsConn {
    let mut c = conn();
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    assert_eq!(
        c.read(&request(), &mut plain, &mut out),
        Ok(WsRead::Continue)
    );
    assert_eq!(out, response("mqtt"));
    assert!(plain.is_empty() && c.is_open());
    c
}

struct Fed {
    result: Result<WsRead, WsError>,
    plain: Vec<u8>,
    out: Vec<u8>,
}

fn feed(c: &mut WsConn, data: &[u8]) -> Fed {
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let result = c.read(data, &mut plain, &mut out);
    Fed { result, plain, out }
}

/// Feed `data` in the given chunks, stopping at the first error or close.
fn feed_chunks<'a>(c: &mut WsConn, chunks: impl IntoIterator<Item = &'a [u8]>) -> Fed {
    let mut all = Fed {
        result: Ok(WsRead::Continue),
        plain: Vec::new(),
        out: Vec::new(),
    };
    for chunk in chunks {
        all.result = c.read(chunk, &mut all.plain, &mut all.out);
        if all.result != Ok(WsRead::Continue) {
            break;
        }
    }
    all
}

fn close_bytes(code: u16) -> Vec<u8> {
    let mut v = Vec::new();
    close_frame(code, &mut v);
    v
}

/// The frame must be refused with close `code`, the close frame being the whole output.
fn assert_closes(data: &[u8], code: u16) {
    let mut c = open();
    let f = feed(&mut c, data);
    assert!(
        matches!(f.result, Err(WsError::Protocol { code: got, .. }) if got == code),
        "{:?}, wanted close {code}",
        f.result
    );
    assert_eq!(f.out, close_bytes(code));
    assert!(c.is_closed());
}

fn status_of(out: &[u8]) -> u16 {
    let line = std::str::from_utf8(out).unwrap().lines().next().unwrap();
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The request must be refused with `status`, with an HTTP answer that closes.
fn assert_refused(data: &[u8], status: u16) -> Vec<u8> {
    let mut c = conn();
    let f = feed(&mut c, data);
    assert!(
        matches!(f.result, Err(WsError::Handshake { status: got, .. }) if got == status),
        "{:?}, wanted {status}",
        f.result
    );
    assert_eq!(status_of(&f.out), status);
    let text = String::from_utf8(f.out.clone()).unwrap();
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"));
    assert!(c.is_closed() && f.plain.is_empty());
    // Nothing more is read or answered.
    let again = feed(&mut c, &request());
    assert_eq!(again.result, Ok(WsRead::Close));
    assert!(again.out.is_empty() && again.plain.is_empty());
    f.out
}

// --- handshake ------------------------------------------------------------------------

#[test]
fn accept_key_matches_rfc_6455_example() {
    assert_eq!(accept_key(KEY.as_bytes()), ACCEPT);
    assert_eq!(
        accept_key(b"wDqumtseNBJdhkihL6PW7w=="),
        "0FFP+2nmNIf/h+4BP36k9uzrYGk="
    );
}

#[test]
fn valid_upgrade() {
    let c = open();
    assert_eq!(c.subprotocol(), Some(Subprotocol::Mqtt));
    assert_eq!(c.forwarded_for(), None);
    assert!(!c.is_handshaking());
}

#[test]
fn header_names_and_upgrade_values_are_case_insensitive() {
    let req = format!(
        "GET /mqtt?client=1 HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\nconnection: upgrade\r\n\
         sec-websocket-key:   {KEY}  \r\nSEC-WEBSOCKET-VERSION: 13\r\n\
         sec-websocket-protocol: mqtt\r\n\r\n"
    );
    let mut c = conn();
    let f = feed(&mut c, req.as_bytes());
    assert_eq!(f.result, Ok(WsRead::Continue));
    assert_eq!(f.out, response("mqtt"));
}

#[test]
fn subprotocol_selection() {
    for (offer, chosen) in [
        ("Sec-WebSocket-Protocol: mqtt\r\n", Subprotocol::Mqtt),
        ("Sec-WebSocket-Protocol: mqttv3.1\r\n", Subprotocol::MqttV31),
        (
            "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n",
            Subprotocol::Mqtt,
        ),
        (
            "Sec-WebSocket-Protocol: mqtt,mqttv3.1\r\n",
            Subprotocol::Mqtt,
        ),
        (
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: mqttv3.1\r\n",
            Subprotocol::MqttV31,
        ),
    ] {
        let mut c = conn();
        let f = feed(&mut c, &request_with("/mqtt", offer));
        assert_eq!(f.result, Ok(WsRead::Continue), "{offer}");
        assert_eq!(f.out, response(chosen.as_str()), "{offer}");
        assert_eq!(c.subprotocol(), Some(chosen));
    }
    assert_refused(&request_with("/mqtt", ""), 400);
    assert_refused(
        &request_with("/mqtt", "Sec-WebSocket-Protocol: chat, MQTT\r\n"),
        400,
    );
}

#[test]
fn wrong_path_is_404() {
    assert_refused(&request_with("/", "Sec-WebSocket-Protocol: mqtt\r\n"), 404);
    assert_refused(
        &request_with("/mqtt/x", "Sec-WebSocket-Protocol: mqtt\r\n"),
        404,
    );
}

#[test]
fn configured_path() {
    let mut cfg = WsConfig::new(1000);
    cfg.path = "/ws".into();
    assert_eq!(cfg.max_message, 1000 + MESSAGE_SLACK);
    let cfg = Arc::new(cfg);
    let mut c = WsConn::new(&cfg);
    let f = feed(
        &mut c,
        &request_with("/ws", "Sec-WebSocket-Protocol: mqtt\r\n"),
    );
    assert_eq!(f.result, Ok(WsRead::Continue));
    let mut c = WsConn::new(&cfg);
    let f = feed(&mut c, &request());
    assert!(matches!(
        f.result,
        Err(WsError::Handshake { status: 404, .. })
    ));
}

#[test]
fn plain_get_is_426() {
    let out = assert_refused(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", 426);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\r\nUpgrade: websocket\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
}

#[test]
fn bad_requests_are_400() {
    let post = String::from_utf8(request())
        .unwrap()
        .replacen("GET", "POST", 1);
    assert_refused(post.as_bytes(), 400);
    let http10 = String::from_utf8(request())
        .unwrap()
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_refused(http10.as_bytes(), 400);
    let no_connection =
        String::from_utf8(request())
            .unwrap()
            .replacen("keep-alive, Upgrade", "keep-alive", 1);
    assert_refused(no_connection.as_bytes(), 400);
}

#[test]
fn bad_key_is_400() {
    let req = String::from_utf8(request()).unwrap();
    for bad in [
        "",
        "dGhlIHNhbXBsZSBub25jZQ",           // no padding
        "dGhlIHNhbXBsZSBub25jZQ=!",         // not base64
        "dGhlIHNhbXBsZSBub25jZSE=",         // 17 bytes
        "dGhlIHNhbXBsZSBub25j",             // 15 bytes
        "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNh", // too long
    ] {
        let r = req.replacen(KEY, bad, 1);
        assert_refused(r.as_bytes(), 400);
    }
    let missing = req.replacen(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "", 1);
    assert_refused(missing.as_bytes(), 400);
    let twice = req.replacen(
        "Sec-WebSocket-Version",
        &format!("Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version"),
        1,
    );
    assert_refused(twice.as_bytes(), 400);
}

#[test]
fn version_12_is_400() {
    let req = String::from_utf8(request())
        .unwrap()
        .replacen("Version: 13", "Version: 12", 1);
    let out = assert_refused(req.as_bytes(), 400);
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("\r\nSec-WebSocket-Version: 13\r\n"));
    let missing =
        String::from_utf8(request())
            .unwrap()
            .replacen("Sec-WebSocket-Version: 13\r\n", "", 1);
    assert_refused(missing.as_bytes(), 400);
}

#[test]
fn garbage_instead_of_a_request_is_400() {
    assert_refused(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400);
    assert_refused(&[0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T'], 400);
    assert_refused(b"GET /mqtt HTTP/1.1\r\nBad Header\r\n\r\n", 400);
}

#[test]
fn head_split_byte_by_byte() {
    let req = request();
    let mut c = conn();
    let mut out = Vec::new();
    let mut plain = Vec::new();
    for (i, b) in req.iter().enumerate() {
        assert_eq!(
            c.read(std::slice::from_ref(b), &mut plain, &mut out),
            Ok(WsRead::Continue)
        );
        assert_eq!(c.is_open(), i == req.len() - 1);
    }
    assert_eq!(out, response("mqtt"));
    assert!(plain.is_empty());
}

#[test]
fn head_split_everywhere_with_trailing_frames() {
    let mut data = request();
    data.extend(binary(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"));
    data.extend(frame(true, OP_PING, b"hi"));
    let mut expected = response("mqtt");
    expected.extend([0x8a, 2, b'h', b'i']);
    for cut in 0..=data.len() {
        let mut c = conn();
        let f = feed_chunks(&mut c, [&data[..cut], &data[cut..]]);
        assert_eq!(f.result, Ok(WsRead::Continue), "cut {cut}");
        assert_eq!(
            f.plain, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c",
            "cut {cut}"
        );
        assert_eq!(f.out, expected, "cut {cut}");
    }
}

#[test]
fn oversize_head_is_431() {
    let big = format!("X-Padding: {}\r\n", "a".repeat(DEFAULT_MAX_HEAD));
    let req = request_with("/mqtt", &format!("Sec-WebSocket-Protocol: mqtt\r\n{big}"));
    // In one read, and buffered from small reads.
    assert_refused(&req, 431);
    let mut c = conn();
    let f = feed_chunks(&mut c, req.chunks(100));
    assert!(matches!(
        f.result,
        Err(WsError::Handshake { status: 431, .. })
    ));
    assert_eq!(status_of(&f.out), 431);
    // A head never ending: refused once it passes the bound, not buffered forever.
    let mut c = conn();
    let mut fed = 0;
    let f = loop {
        let f = feed(&mut c, b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        fed += 44;
        if f.result != Ok(WsRead::Continue) {
            break f;
        }
        assert!(fed < DEFAULT_MAX_HEAD + 100);
    };
    // The request line is missing, so httparse sees no method... any refusal closes.
    assert!(matches!(f.result, Err(WsError::Handshake { .. })));
    let mut c = conn();
    assert_eq!(
        feed(&mut c, b"GET /mqtt HTTP/1.1\r\n").result,
        Ok(WsRead::Continue)
    );
    let f = loop {
        let f = feed(&mut c, b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        if f.result != Ok(WsRead::Continue) {
            break f;
        }
    };
    assert!(matches!(
        f.result,
        Err(WsError::Handshake { status: 431, .. })
    ));
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_refused(&request_with("/mqtt", &many), 431);
}

#[test]
fn forwarded_for() {
    for (header, want) in [
        ("X-Forwarded-For: 203.0.113.7\r\n", Some("203.0.113.7")),
        (
            "x-forwarded-for: 203.0.113.7, 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n",
            Some("203.0.113.7"),
        ),
        (
            "X-Forwarded-For:  2001:db8::1 ,10.0.0.1\r\n",
            Some("2001:db8::1"),
        ),
        (
            "X-Forwarded-For: [2001:db8::1]:4711\r\n",
            Some("2001:db8::1"),
        ),
        ("X-Forwarded-For: [2001:db8::2]\r\n", Some("2001:db8::2")),
        ("X-Forwarded-For: 198.51.100.1:80\r\n", Some("198.51.100.1")),
        ("X-Forwarded-For: unknown, 10.0.0.1\r\n", None),
        ("X-Forwarded-For: \r\n", None),
        ("", None),
    ] {
        let mut c = conn();
        let extra = format!("Sec-WebSocket-Protocol: mqtt\r\n{header}");
        let f = feed(&mut c, &request_with("/mqtt", &extra));
        assert_eq!(f.result, Ok(WsRead::Continue), "{header}");
        let want: Option<IpAddr> = want.map(|w| w.parse().unwrap());
        assert_eq!(c.forwarded_for(), want, "{header}");
    }
}

// --- frames -----------------------------------------------------------------------------

#[test]
fn masked_binary_frame() {
    let mut c = open();
    let f = feed(&mut c, &binary(b"\xc0\x00"));
    assert_eq!(f.result, Ok(WsRead::Continue));
    assert_eq!(f.plain, b"\xc0\x00");
    assert!(f.out.is_empty());
    // Appended to what the caller's Vec holds.
    let mut plain = b"xy".to_vec();
    let mut out = Vec::new();
    c.read(&binary(b"\xd0\x00"), &mut plain, &mut out).unwrap();
    assert_eq!(plain, b"xy\xd0\x00");
    // Empty frames are fine.
    assert_eq!(feed(&mut c, &binary(b"")).result, Ok(WsRead::Continue));
}

#[test]
fn frame_split_at_every_byte_position() {
    for len in [1usize, 7, 125, 126, 300, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let data = binary(&payload);
        let cuts: Vec<usize> = if len > 1000 {
            (0..20).chain(data.len() - 20..=data.len()).collect()
        } else {
            (0..=data.len()).collect()
        };
        for cut in cuts {
            let mut c = open();
            let f = feed_chunks(&mut c, [&data[..cut], &data[cut..]]);
            assert_eq!(f.result, Ok(WsRead::Continue), "len {len} cut {cut}");
            assert!(f.plain == payload, "len {len} cut {cut}");
            assert!(f.out.is_empty());
        }
    }
    // And byte by byte, with a ping in the middle of a fragmented message.
    let mut data = frame(false, OP_BINARY, b"abcdef");
    data.extend(frame(true, OP_PING, b"0123456789"));
    data.extend(frame(true, OP_CONTINUATION, b"ghij"));
    let mut c = open();
    let f = feed_chunks(&mut c, data.chunks(1));
    assert_eq!(f.result, Ok(WsRead::Continue));
    assert_eq!(f.plain, b"abcdefghij");
    assert_eq!(f.out, [&[0x8a, 10][..], b"0123456789"].concat());
}

#[test]
fn several_packets_in_one_frame_and_one_packet_in_three_frames() {
    let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c";
    let pingreq = b"\xc0\x00";
    let mut c = open();
    let f = feed(&mut c, &binary(&[&connect[..], pingreq, pingreq].concat()));
    assert_eq!(f.plain, [&connect[..], pingreq, pingreq].concat());
    let mut data = frame(false, OP_BINARY, &connect[..3]);
    data.extend(frame(false, OP_CONTINUATION, &connect[3..9]));
    data.extend(frame(true, OP_CONTINUATION, &connect[9..]));
    // Then a new message may start.
    data.extend(binary(pingreq));
    let f = feed(&mut c, &data);
    assert_eq!(f.result, Ok(WsRead::Continue));
    assert_eq!(f.plain, [&connect[..], pingreq].concat());
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let mut c = open();
    let f = feed(&mut c, &frame(true, OP_PING, b"are you there"));
    assert_eq!(f.result, Ok(WsRead::Continue));
    assert_eq!(f.out, [&[0x8a, 13][..], b"are you there"].concat());
    let f = feed(&mut c, &frame(true, OP_PING, b""));
    assert_eq!(f.out, [0x8a, 0]);
    let big = [0x5a; 125];
    let f = feed(&mut c, &frame(true, OP_PING, &big));
    assert_eq!(f.out, [&[0x8a, 125][..], &big].concat());
    assert!(f.plain.is_empty());
    // Pongs are ignored.
    let f = feed(&mut c, &frame(true, OP_PONG, b"x"));
    assert_eq!(f.result, Ok(WsRead::Continue));
    assert!(f.out.is_empty() && f.plain.is_empty());
}

#[test]
fn close_is_echoed() {
    let mut c = open();
    let mut data = binary(b"\xe0\x00"); // DISCONNECT, then the close
    data.extend(frame(true, OP_CLOSE, b"\x03\xe9going away"));
    data.extend(binary(b"ignored"));
    let f = feed(&mut c, &data);
    assert_eq!(f.result, Ok(WsRead::Close));
    assert_eq!(f.plain, b"\xe0\x00");
    assert_eq!(f.out, close_bytes(1001));
    assert!(c.is_closed());
    // No status code: answered with 1000.
    let mut c = open();
    let f = feed(&mut c, &frame(true, OP_CLOSE, b""));
    assert_eq!(f.result, Ok(WsRead::Close));
    assert_eq!(f.out, close_bytes(1000));
    // Split across reads.
    let mut c = open();
    let f = feed_chunks(&mut c, frame(true, OP_CLOSE, b"\x0f\xa0bye").chunks(1));
    assert_eq!(f.result, Ok(WsRead::Close));
    assert_eq!(f.out, close_bytes(4000));
}

#[test]
fn bad_close_frames() {
    assert_closes(&frame(true, OP_CLOSE, b"\x03"), 1002);
    assert_closes(&frame(true, OP_CLOSE, &1005u16.to_be_bytes()), 1002);
    assert_closes(&frame(true, OP_CLOSE, &999u16.to_be_bytes()), 1002);
    assert_closes(&frame(true, OP_CLOSE, b"\x03\xe8\xff\xfe"), 1007);
}

#[test]
fn protocol_errors() {
    // Unmasked.
    assert_closes(&[0x82, 0x02, 0xc0, 0x00], 1002);
    assert_closes(&frame(true, OP_TEXT, b"hello"), 1003);
    // RSV1, RSV2, RSV3.
    for rsv in [0x40, 0x20, 0x10] {
        assert_closes(&raw_frame(0x82 | rsv, b"\xc0\x00", MASK), 1002);
    }
    for op in [0x3, 0x7, 0xb, 0xf] {
        assert_closes(&frame(true, op, b""), 1002);
    }
    assert_closes(&frame(true, OP_PING, &[0; 126]), 1002);
    assert_closes(&frame(true, OP_CLOSE, &[0; 126]), 1002);
    assert_closes(&frame(false, OP_PING, b"x"), 1002);
    assert_closes(&frame(true, OP_CONTINUATION, b"x"), 1002);
    let mut data = frame(false, OP_BINARY, b"x");
    data.extend(binary(b"y"));
    assert_closes(&data, 1002);
    // The bytes before the bad frame were delivered.
    let mut c = open();
    let mut data = binary(b"\xc0\x00");
    data.extend([0x82, 0x00]);
    let f = feed(&mut c, &data);
    assert_eq!(f.plain, b"\xc0\x00");
    assert!(matches!(
        f.result,
        Err(WsError::Protocol { code: 1002, .. })
    ));
}

#[test]
fn too_big() {
    // Length 2^63, and the largest 63-bit one.
    for len in [1u64 << 63, u64::MAX, (1 << 63) - 1] {
        let mut data = vec![0x82, 0x80 | 127];
        data.extend(len.to_be_bytes());
        data.extend(MASK);
        assert_closes(&data, 1009);
    }
    // Over max_message: one frame, and a message of two frames.
    let mut c = conn_with(100);
    c.read(&request(), &mut Vec::new(), &mut Vec::new())
        .unwrap();
    assert_eq!(
        feed(&mut c, &binary(&[1; 100])).result,
        Ok(WsRead::Continue)
    );
    let f = feed(&mut c, &binary(&[1; 101]));
    assert!(matches!(
        f.result,
        Err(WsError::Protocol { code: 1009, .. })
    ));
    assert_eq!(f.out, close_bytes(1009));
    assert!(
        f.plain.is_empty(),
        "refused at the header, before the payload"
    );
    let mut c = conn_with(100);
    c.read(&request(), &mut Vec::new(), &mut Vec::new())
        .unwrap();
    let mut data = frame(false, OP_BINARY, &[1; 60]);
    data.extend(frame(true, OP_CONTINUATION, &[1; 40]));
    data.extend(frame(false, OP_BINARY, &[1; 60]));
    data.extend(frame(true, OP_CONTINUATION, &[1; 41]));
    let f = feed(&mut c, &data);
    assert!(matches!(
        f.result,
        Err(WsError::Protocol { code: 1009, .. })
    ));
    assert_eq!(f.plain.len(), 160);
}

#[test]
fn input_after_close_is_ignored() {
    let mut c = open();
    let f = feed(&mut c, &frame(true, OP_TEXT, b"x"));
    assert!(f.result.is_err());
    for _ in 0..2 {
        let f = feed(&mut c, &binary(b"\xc0\x00"));
        assert_eq!(f.result, Ok(WsRead::Close));
        assert!(f.plain.is_empty() && f.out.is_empty());
    }
    // Closed by the server.
    let mut c = open();
    let mut out = Vec::new();
    c.close(1001, &mut out);
    assert_eq!(out, close_bytes(1001));
    c.close(1001, &mut out);
    assert_eq!(out, close_bytes(1001), "one close frame only");
    let f = feed(&mut c, &binary(b"\xc0\x00"));
    assert_eq!(f.result, Ok(WsRead::Close));
    assert!(f.plain.is_empty() && f.out.is_empty());
    // Before the upgrade: nothing to send.
    let mut c = conn();
    let mut out = Vec::new();
    c.close(1000, &mut out);
    assert!(out.is_empty() && c.is_closed());
}

#[test]
fn server_frames() {
    for (len, header) in [
        (0usize, vec![0x82, 0]),
        (125, vec![0x82, 125]),
        (126, vec![0x82, 126, 0, 126]),
        (65535, vec![0x82, 126, 0xff, 0xff]),
        (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let payload = vec![0xab; len];
        let mut out = b"before".to_vec();
        encode_binary(&payload, &mut out);
        assert_eq!(&out[..6], b"before");
        assert_eq!(out[6..6 + header.len()], header[..], "len {len}");
        assert_eq!(out[6 + header.len()..], payload[..]);
        let mut via = Vec::new();
        open().encode(&payload, &mut via);
        assert_eq!(via, out[6..]);
    }
    assert_eq!(close_bytes(1009), [0x88, 2, 0x03, 0xf1]);
}

#[test]
fn small_per_connection_state() {
    // The decoder keeps a partial header and a few counters; no frame buffer.
    assert!(
        std::mem::size_of::<WsConn>() <= 128,
        "{}",
        std::mem::size_of::<WsConn>()
    );
}

#[test]
fn unmask_any_offset() {
    let data: Vec<u8> = (0..=40).collect();
    for off in 0..4u8 {
        let mut a = data.clone();
        unmask(&mut a, MASK, off);
        let b: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ MASK[(i + usize::from(off)) % 4])
            .collect();
        assert_eq!(a, b);
    }
}

// --- properties -------------------------------------------------------------------------

/// A client message: its payload, where it is cut into frames, the masks, and an optional
/// ping sent after its first frame.
#[derive(Debug, Clone)]
struct Message {
    payload: Vec<u8>,
    cuts: Vec<usize>,
    mask: [u8; 4],
    ping: Option<Vec<u8>>,
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..200),
            1 => proptest::collection::vec(any::<u8>(), 200..70_000),
        ],
        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        any::<[u8; 4]>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=125)),
    )
        .prop_map(|(payload, cuts, mask, ping)| {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
            cuts.sort_unstable();
            Message {
                payload,
                cuts,
                mask,
                ping,
            }
        })
}

/// The client bytes of `messages` and the pongs they should get.
fn encode_messages(messages: &[Message]) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut pongs = Vec::new();
    for m in messages {
        let mut bounds = vec![0];
        bounds.extend(&m.cuts);
        bounds.push(m.payload.len());
        let frames = bounds.len() - 1;
        for i in 0..frames {
            let op = if i == 0 { OP_BINARY } else { OP_CONTINUATION };
            let fin = i == frames - 1;
            let part = &m.payload[bounds[i]..bounds[i + 1]];
            wire.extend(raw_frame(u8::from(fin) << 7 | op, part, m.mask));
            if i == 0 {
                if let Some(p) = &m.ping {
                    wire.extend(raw_frame(0x80 | OP_PING, p, m.mask));
                    write_frame(OP_PONG, p, &mut pongs);
                }
            }
        }
    }
    (wire, pongs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn frames_in_any_split_give_the_payloads(
        messages in proptest::collection::vec(message(), 0..6),
        splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut data = request();
        let (wire, pongs) = encode_messages(&messages);
        data.extend(wire);
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(data.len() + 1)).collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort_unstable();
        let mut c = conn();
        let f = feed_chunks(&mut c, cuts.windows(2).map(|w| &data[w[0]..w[1]]));
        prop_assert_eq!(f.result, Ok(WsRead::Continue));
        let expected: Vec<u8> = messages.iter().flat_map(|m| m.payload.iter().copied()).collect();
        prop_assert!(f.plain == expected);
        prop_assert_eq!(f.out, [response("mqtt"), pongs].concat());
    }

    #[test]
    fn any_input_never_panics(
        open_first in any::<bool>(),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let mut c = if open_first { open() } else { conn() };
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let mut failed = false;
        for chunk in &chunks {
            let r = c.read(chunk, &mut plain, &mut out);
            if failed {
                prop_assert_eq!(r, Ok(WsRead::Close));
            }
            failed |= r != Ok(WsRead::Continue);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        messages in proptest::collection::vec(message(), 1..3),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (mut wire, _) = encode_messages(&messages);
        for (i, x) in &flips {
            let i = i.index(wire.len().max(1));
            if let Some(b) = wire.get_mut(i) {
                *b ^= x;
            }
        }
        let mut c = open();
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        for chunk in wire.chunks(37) {
            if c.read(chunk, &mut plain, &mut out) != Ok(WsRead::Continue) {
                prop_assert!(c.is_closed());
                break;
            }
        }
    }
}
