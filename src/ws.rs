//! MQTT over WebSocket (RFC 6455, server side) as a sans-IO state machine.
//!
//! Like [`crate::tls::TlsConn`], nothing here touches a socket. The worker hands every
//! received chunk to [`WsConn::read`], which appends the MQTT bytes carried by the client's
//! binary frames to `plain` (for the usual MQTT frame/decode path) and the bytes owed to the
//! client (the HTTP answer to the upgrade request, pongs, close frames) to `out` (for
//! `Io::send`). Outgoing MQTT packets are framed with [`WsConn::encode`] (or
//! [`encode_binary`]). When a connection runs over TLS too, the order is
//! socket -> `TlsConn::read` -> `WsConn::read` -> MQTT, and back through
//! `WsConn::encode` -> `TlsConn::encrypt`.
//!
//! The layer is a byte stream: MQTT packets may span frames and one frame may carry several
//! packets, so the payloads of binary and continuation frames are simply unmasked and
//! appended to `plain` as they arrive. A frame's payload is never buffered: between reads the
//! decoder keeps a partial frame header (at most 14 bytes), the mask, the mask offset and the
//! remaining length (see [`WsConn`]'s size test). Only a control frame (at most 125 bytes)
//! whose payload is split across reads is collected in a small buffer, freed once used.
//!
//! Phases, as in [`State`]: `Handshake` (the HTTP/1.1 upgrade request, buffered until its
//! head is complete, at most [`WsConfig::max_head`] bytes), `Open` (frames), `Closed` (every
//! later input is ignored). A refused upgrade gets its HTTP status and the connection must
//! be closed (the answer carries `Connection: close`); a frame that breaks the protocol or
//! the limits gets a close frame with the matching status code. In both cases the bytes are
//! in `out` and [`WsConn::read`] returns a [`WsError`]: the caller sends `out`, then closes.
//!
//! Keep-alive: any byte from the client counts as activity, including partial frames and
//! control frames (RFC 6455 pings), so the caller resets the MQTT keep-alive deadline on
//! every read it hands to [`WsConn::read`], exactly as for a plain TCP connection; the layer
//! does not report it separately. Handshake timeouts are the caller's too (the connect
//! timeout that already covers a slow CONNECT covers a slow upgrade request).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

#[cfg(test)]
mod tests;

/// The request path a WebSocket listener answers on unless configured otherwise.
pub const DEFAULT_PATH: &str = "/mqtt";
/// The default bound on the upgrade request's head (request line and headers).
pub const DEFAULT_MAX_HEAD: usize = 8 * 1024;
/// What [`WsConfig::new`] adds to the MQTT maximum packet size to get the largest
/// WebSocket message accepted (a message may carry several small packets besides one large).
pub const MESSAGE_SLACK: u64 = 4096;

/// Close status codes (RFC 6455 section 7.4.1) this layer sends.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Headers parsed in the upgrade request; more is answered 431.
const MAX_HEADERS: usize = 64;
/// The largest control frame payload (RFC 6455 section 5.5).
const MAX_CONTROL: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Settings of a WebSocket listener, built once and shared by every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsConfig {
    /// The request path to upgrade (the query string is ignored); others get 404.
    pub path: String,
    /// The largest frame and the largest message (the sum of its fragments) accepted, in
    /// payload bytes; larger gets close 1009.
    pub max_message: u64,
    /// The largest upgrade request head; larger gets 431.
    pub max_head: usize,
}

impl WsConfig {
    /// Path [`DEFAULT_PATH`], head bound [`DEFAULT_MAX_HEAD`], and messages up to the
    /// broker's `max_packet_size` plus [`MESSAGE_SLACK`].
    pub fn new(max_packet_size: u32) -> WsConfig {
        WsConfig {
            path: DEFAULT_PATH.to_owned(),
            max_message: u64::from(max_packet_size) + MESSAGE_SLACK,
            max_head: DEFAULT_MAX_HEAD,
        }
    }
}

impl Default for WsConfig {
    /// As [`WsConfig::new`] with the broker's default `max_packet_size` (1 MiB).
    fn default() -> WsConfig {
        WsConfig::new(1 << 20)
    }
}

/// The WebSocket subprotocol agreed on in the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subprotocol {
    /// `mqtt` (MQTT 3.1.1 and 5.0), preferred when the client offers both.
    Mqtt,
    /// `mqttv3.1`, still offered alone by some old clients.
    MqttV31,
}

impl Subprotocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Subprotocol::Mqtt => "mqtt",
            Subprotocol::MqttV31 => "mqttv3.1",
        }
    }
}

/// What a successful [`WsConn::read`] leaves the connection in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsRead {
    /// Still handshaking, or open: go on reading.
    Continue,
    /// The client sent a close frame (answered in `out`), or the connection was already
    /// closed: send `out`, then close the socket.
    Close,
}

/// Why a WebSocket connection must end. The answer owed to the client is already in `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade request was refused with this HTTP status (400, 404, 426 or 431).
    Handshake { status: u16, reason: &'static str },
    /// A frame broke RFC 6455 or a limit; a close frame with this status code was queued.
    Protocol { code: u16, reason: &'static str },
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Handshake { status, reason } => {
                write!(f, "websocket upgrade refused ({status}): {reason}")
            }
            WsError::Protocol { code, reason } => write!(f, "websocket close {code}: {reason}"),
        }
    }
}

impl std::error::Error for WsError {}

/// The connection's phase.
enum State {
    /// Waiting for the complete upgrade request head; `head` holds a partial one (empty,
    /// without an allocation, while nothing is pending).
    Handshake { head: Vec<u8> },
    /// Upgraded: decoding client frames.
    Open(Decoder),
    /// A close frame or an HTTP error was queued (or the caller closed): input is ignored.
    Closed,
}

/// Per-connection WebSocket state (boxed in the worker's `Client`, like `TlsConn`).
pub struct WsConn {
    config: Arc<WsConfig>,
    state: State,
    subprotocol: Option<Subprotocol>,
    forwarded_for: Option<IpAddr>,
}

impl WsConn {
    pub fn new(config: &Arc<WsConfig>) -> WsConn {
        WsConn {
            config: config.clone(),
            state: State::Handshake { head: Vec::new() },
            subprotocol: None,
            forwarded_for: None,
        }
    }

    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshake { .. })
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The subprotocol agreed on, once the upgrade is done.
    pub fn subprotocol(&self) -> Option<Subprotocol> {
        self.subprotocol
    }

    /// The first address of the upgrade request's `X-Forwarded-For` (if it parses as an IP
    /// address, with or without a port). Whatever the client or a proxy wrote: only the
    /// caller can tell whether the peer is a proxy it trusts to have set it.
    pub fn forwarded_for(&self) -> Option<IpAddr> {
        self.forwarded_for
    }

    /// Feed received bytes. The MQTT bytes of binary (and continuation) frames are appended
    /// to `plain`; the bytes owed to the client (the upgrade answer, pongs, close frames, an
    /// HTTP error) to `out`, also on error.
    ///
    /// On [`WsRead::Close`] and on error, `plain` still holds the MQTT bytes that came
    /// before the close or the bad frame, in full frames' worth or partial: the caller
    /// should hand them to the MQTT decoder before closing (a DISCONNECT right before the
    /// close frame must suppress the will).
    pub fn read(
        &mut self,
        data: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<WsRead, WsError> {
        let frames = match self.state {
            State::Closed => return Ok(WsRead::Close),
            State::Open(_) => data,
            State::Handshake { .. } => match self.handshake(data, out)? {
                Some(rest) => rest,
                None => return Ok(WsRead::Continue),
            },
        };
        let State::Open(decoder) = &mut self.state else {
            return Ok(WsRead::Close);
        };
        match decoder.decode(frames, self.config.max_message, plain, out) {
            Ok(false) => Ok(WsRead::Continue),
            Ok(true) => {
                self.state = State::Closed;
                Ok(WsRead::Close)
            }
            Err((code, reason)) => {
                close_frame(code, out);
                self.state = State::Closed;
                Err(WsError::Protocol { code, reason })
            }
        }
    }

    /// Frame `data` (one or more encoded MQTT packets) as one binary frame into `out`.
    /// Only meaningful once the connection is open.
    pub fn encode(&self, data: &[u8], out: &mut Vec<u8>) {
        encode_binary(data, out);
    }

    /// Close from the server side: queue a close frame with `code` into `out` if the
    /// connection is open (nothing otherwise: before the upgrade there is no WebSocket to
    /// close, and once closed the close frame or HTTP error was already sent). Later input
    /// is ignored.
    pub fn close(&mut self, code: u16, out: &mut Vec<u8>) {
        if self.is_open() {
            close_frame(code, out);
        }
        self.state = State::Closed;
    }

    /// The handshake phase: `Ok(Some(rest))` once upgraded (`rest`: the bytes after the
    /// request head, the first frame bytes), `Ok(None)` while the head is incomplete.
    fn handshake<'d>(
        &mut self,
        data: &'d [u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<&'d [u8]>, WsError> {
        let State::Handshake { head } = &mut self.state else {
            return Ok(Some(data));
        };
        let max = self.config.max_head;
        let (verdict, rest) = if head.is_empty() {
            // The usual case: the whole head in one read, parsed in place.
            let window = &data[..data.len().min(max)];
            match parse_head(window, &self.config) {
                Head::Partial if data.len() >= max => (Err(too_large()), &data[..0]),
                Head::Partial => {
                    head.extend_from_slice(data);
                    return Ok(None);
                }
                Head::Complete(n, v) => (v, data.get(n..).unwrap_or_default()),
                Head::Invalid(r) => (Err(r), &data[..0]),
            }
        } else {
            let old = head.len();
            let take = data.len().min(max.saturating_sub(old));
            head.extend_from_slice(&data[..take]);
            // A head only ends at a line end: without one in the new bytes, skip the parse,
            // so a client trickling bytes does not get the buffer parsed again per byte.
            let parsed = if data[..take].contains(&b'\n') {
                parse_head(head, &self.config)
            } else {
                Head::Partial
            };
            match parsed {
                Head::Partial if head.len() >= max => (Err(too_large()), &data[..0]),
                Head::Partial => return Ok(None),
                // The head ends in `data`: the previous parse of `head[..old]` was partial.
                Head::Complete(n, v) => (v, data.get(n.saturating_sub(old)..).unwrap_or_default()),
                Head::Invalid(r) => (Err(r), &data[..0]),
            }
        };
        match verdict {
            Ok(accepted) => {
                write_switching(&accepted, out);
                self.subprotocol = Some(accepted.subprotocol);
                self.forwarded_for = accepted.forwarded_for;
                self.state = State::Open(Decoder::default());
                Ok(Some(rest))
            }
            Err(refused) => {
                write_refusal(refused.status, out);
                self.state = State::Closed;
                Err(WsError::Handshake {
                    status: refused.status,
                    reason: refused.reason,
                })
            }
        }
    }
}

/// Write one binary frame (FIN, unmasked) carrying `payload` into `out`.
pub fn encode_binary(payload: &[u8], out: &mut Vec<u8>) {
    write_frame(OP_BINARY, payload, out);
}

/// Write a close frame with status `code` (and no reason) into `out`.
pub fn close_frame(code: u16, out: &mut Vec<u8>) {
    write_frame(OP_CLOSE, &code.to_be_bytes(), out);
}

/// A server frame: FIN, no mask, the shortest length encoding.
fn write_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    let n = payload.len();
    out.reserve(10 + n);
    out.push(0x80 | opcode);
    if n < 126 {
        out.push(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

// ---------------------------------------------------------------------------------------
// The upgrade request.

struct Accepted {
    subprotocol: Subprotocol,
    /// base64(SHA-1(key + GUID)): always 28 characters.
    accept: String,
    forwarded_for: Option<IpAddr>,
}

struct Refused {
    status: u16,
    reason: &'static str,
}

enum Head {
    Partial,
    /// The head is `n` bytes long; the verdict on it.
    Complete(usize, Result<Accepted, Refused>),
    /// Not HTTP, or too many headers.
    Invalid(Refused),
}

fn refuse(status: u16, reason: &'static str) -> Refused {
    Refused { status, reason }
}

fn too_large() -> Refused {
    refuse(431, "request head too large")
}

fn parse_head(buf: &[u8], config: &WsConfig) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(n)) => Head::Complete(n, check_request(&req, config)),
        Err(httparse::Error::TooManyHeaders) => Head::Invalid(refuse(431, "too many headers")),
        Err(_) => Head::Invalid(refuse(400, "malformed request")),
    }
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The first address of an `X-Forwarded-For` value: `1.2.3.4`, `2001:db8::1`, `[::1]`,
/// `1.2.3.4:5678` or `[::1]:5678`.
fn first_forwarded(value: &[u8]) -> Option<IpAddr> {
    let first = std::str::from_utf8(value).ok()?.split(',').next()?.trim();
    first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let inner = first.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<IpAddr>().ok()
        })
}

fn check_request(req: &httparse::Request<'_, '_>, config: &WsConfig) -> Result<Accepted, Refused> {
    if req.version != Some(1) {
        return Err(refuse(400, "not HTTP/1.1"));
    }
    if req.method != Some("GET") {
        return Err(refuse(400, "method is not GET"));
    }
    let path = req.path.unwrap_or_default();
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path != config.path {
        return Err(refuse(404, "no WebSocket endpoint at this path"));
    }
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut keys = 0;
    let mut key: &[u8] = &[];
    let mut versions = 0;
    let mut version: &[u8] = &[];
    let mut mqtt = false;
    let mut mqttv31 = false;
    let mut forwarded_for = None;
    let mut forwarded_seen = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            keys += 1;
            key = h.value.trim_ascii();
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            versions += 1;
            version = h.value.trim_ascii();
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            for t in tokens(h.value) {
                mqtt |= t == b"mqtt";
                mqttv31 |= t == b"mqttv3.1";
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") && !forwarded_seen {
            // Repeated headers form one list: the first one holds its first address.
            forwarded_seen = true;
            forwarded_for = first_forwarded(h.value);
        }
    }
    if !upgrade {
        return Err(refuse(426, "not a WebSocket upgrade request"));
    }
    if !connection_upgrade {
        return Err(refuse(400, "Connection header without the upgrade token"));
    }
    if versions != 1 || version != b"13" {
        return Err(refuse(400, "Sec-WebSocket-Version is not 13"));
    }
    if keys != 1 || key.len() != 24 || BASE64.decode(key).map_or(true, |k| k.len() != 16) {
        return Err(refuse(400, "bad Sec-WebSocket-Key"));
    }
    let subprotocol = if mqtt {
        Subprotocol::Mqtt
    } else if mqttv31 {
        Subprotocol::MqttV31
    } else {
        return Err(refuse(
            400,
            "no acceptable Sec-WebSocket-Protocol (mqtt, mqttv3.1)",
        ));
    };
    Ok(Accepted {
        subprotocol,
        accept: accept_key(key),
        forwarded_for,
    })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (as sent, trimmed).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    BASE64.encode(sha.finalize())
}

fn write_switching(a: &Accepted, out: &mut Vec<u8>) {
    for part in [
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        &a.accept,
        "\r\nSec-WebSocket-Protocol: ",
        a.subprotocol.as_str(),
        "\r\n\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
}

fn write_refusal(status: u16, out: &mut Vec<u8>) {
    let (line, extra) = match status {
        404 => ("404 Not Found", ""),
        426 => (
            "426 Upgrade Required",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        ),
        431 => ("431 Request Header Fields Too Large", ""),
        _ => ("400 Bad Request", "Sec-WebSocket-Version: 13\r\n"),
    };
    for part in [
        "HTTP/1.1 ",
        line,
        "\r\n",
        extra,
        "Connection: close\r\nContent-Length: 0\r\n\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// Client frames.

/// Why decoding stopped: the close status code and a reason for the log.
type Fail = (u16, &'static str);

/// Frame decoder state, kept between reads.
#[derive(Default)]
struct Decoder {
    /// A partial frame header (2 bytes, up to 8 of extended length, 4 of mask).
    head: [u8; 14],
    head_len: u8,
    /// The current frame's header is complete; its payload is being read.
    in_payload: bool,
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// The mask index of the next payload byte.
    mask_off: u8,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// A fragmented binary message is open (its first frame had no FIN).
    fragmented: bool,
    /// Payload bytes of the current message so far (all its frames).
    message_len: u64,
    /// A control frame's payload split across reads (empty, without an allocation,
    /// otherwise).
    control: Vec<u8>,
}

/// The header size given its second byte (the mask bit is checked before this counts).
fn header_size(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + 4
}

/// XOR `buf` with `mask`, the first byte of `buf` being at mask index `off`.
fn unmask(buf: &mut [u8], mask: [u8; 4], off: u8) {
    let mut key = mask;
    key.rotate_left(usize::from(off & 3));
    let word = u32::from_ne_bytes(key);
    let mut chunks = buf.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// Close codes a client may send (RFC 6455 section 7.4, and the IANA registry's 1012-1014).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl Decoder {
    /// Decode `data`; true when the client closed (the answer is in `out`).
    fn decode(
        &mut self,
        mut data: &[u8],
        max_message: u64,
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<bool, Fail> {
        while !data.is_empty() {
            if !self.in_payload {
                let have = usize::from(self.head_len);
                let need = if have < 2 {
                    2
                } else {
                    header_size(self.head[1])
                };
                let take = need.saturating_sub(have).min(data.len());
                let (bytes, rest) = data.split_at(take);
                self.head[have..have + take].copy_from_slice(bytes);
                data = rest;
                let have = have + take;
                self.head_len = have as u8;
                if have == 2 && need == 2 {
                    self.check_start()?;
                }
                if have < 2 || have < header_size(self.head[1]) {
                    continue;
                }
                self.start_payload(max_message)?;
                if self.remaining == 0 && self.end_frame(&[], out)? {
                    return Ok(true);
                }
                continue;
            }
            let n = usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
            let (chunk, rest) = data.split_at(n);
            data = rest;
            self.remaining -= n as u64;
            if self.opcode & 0x8 == 0 {
                let start = plain.len();
                plain.extend_from_slice(chunk);
                unmask(&mut plain[start..], self.mask, self.mask_off);
                self.mask_off = ((usize::from(self.mask_off) + n) & 3) as u8;
                if self.remaining == 0 {
                    self.end_frame(&[], out)?;
                }
                continue;
            }
            // A control frame: its payload is needed whole (at most 125 bytes).
            if self.remaining > 0 {
                self.control.extend_from_slice(chunk);
                continue;
            }
            let mut buf = [0u8; MAX_CONTROL];
            let len = if self.control.is_empty() {
                let len = chunk.len().min(MAX_CONTROL);
                buf[..len].copy_from_slice(&chunk[..len]);
                len
            } else {
                self.control.extend_from_slice(chunk);
                let len = self.control.len().min(MAX_CONTROL);
                buf[..len].copy_from_slice(&self.control[..len]);
                self.control = Vec::new();
                len
            };
            unmask(&mut buf[..len], self.mask, 0);
            if self.end_frame(&buf[..len], out)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks on the first two header bytes.
    fn check_start(&self) -> Result<(), Fail> {
        let [b0, b1, ..] = self.head;
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        if b0 & 0x70 != 0 {
            return Err((CLOSE_PROTOCOL_ERROR, "reserved bits set"));
        }
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err((CLOSE_PROTOCOL_ERROR, "unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err((CLOSE_PROTOCOL_ERROR, "client frame not masked"));
        }
        if opcode & 0x8 != 0 {
            if !fin {
                return Err((CLOSE_PROTOCOL_ERROR, "fragmented control frame"));
            }
            if usize::from(b1 & 0x7f) > MAX_CONTROL {
                return Err((CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes"));
            }
        } else if opcode == OP_TEXT {
            return Err((CLOSE_UNSUPPORTED_DATA, "text frame (MQTT needs binary)"));
        } else if opcode == OP_CONTINUATION && !self.fragmented {
            return Err((CLOSE_PROTOCOL_ERROR, "continuation without a message"));
        } else if opcode == OP_BINARY && self.fragmented {
            return Err((CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one"));
        }
        Ok(())
    }

    /// The header is complete: take length and mask, check the size limits.
    fn start_payload(&mut self, max_message: u64) -> Result<(), Fail> {
        let h = self.head;
        let (len, mask_at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                10,
            ),
            n => (u64::from(n), 2),
        };
        let opcode = h[0] & 0x0f;
        if len >> 63 != 0 {
            return Err((CLOSE_MESSAGE_TOO_BIG, "64-bit length with the top bit set"));
        }
        if opcode & 0x8 == 0 {
            let message = self.message_len.saturating_add(len);
            if message > max_message {
                return Err((CLOSE_MESSAGE_TOO_BIG, "message over the size limit"));
            }
            self.message_len = message;
        }
        self.mask = [h[mask_at], h[mask_at + 1], h[mask_at + 2], h[mask_at + 3]];
        self.mask_off = 0;
        self.remaining = len;
        self.opcode = opcode;
        self.fin = h[0] & 0x80 != 0;
        self.head_len = 0;
        self.in_payload = true;
        Ok(())
    }

    /// The current frame is complete (`payload`: a control frame's, unmasked). True when
    /// it was a close.
    fn end_frame(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<bool, Fail> {
        self.in_payload = false;
        match self.opcode {
            OP_PING => write_frame(OP_PONG, payload, out),
            OP_PONG => {}
            OP_CLOSE => {
                let code = match payload {
                    [] => CLOSE_NORMAL,
                    [_] => return Err((CLOSE_PROTOCOL_ERROR, "close frame of 1 byte")),
                    [a, b, reason @ ..] => {
                        let code = u16::from_be_bytes([*a, *b]);
                        if !valid_close_code(code) {
                            return Err((CLOSE_PROTOCOL_ERROR, "invalid close code"));
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return Err((CLOSE_INVALID_PAYLOAD, "close reason not UTF-8"));
                        }
                        code
                    }
                };
                close_frame(code, out);
                return Ok(true);
            }
            // Binary or continuation.
            _ => {
                self.fragmented = !self.fin;
                if self.fin {
                    self.message_len = 0;
                }
            }
        }
        Ok(false)
    }
}
