//! The PROXY protocol (HAProxy's, versions 1 and 2), receiver side, as a sans-IO parser.
//!
//! A load balancer in front of the broker opens a TCP connection of its own for each client
//! and sends, before anything else, one header that names the client's address. On a
//! listener configured for it (`proxy_protocol_listeners`), the worker hands every received
//! chunk to [`ProxyConn::read`] until the header is complete; the bytes after it (the start of
//! MQTT, a TLS ClientHello or an HTTP upgrade request) go on to the next layer unchanged, and
//! the state is dropped.
//!
//! - Version 1 (text): `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or
//!   `PROXY UNKNOWN ...\r\n`, at most [`V1_MAX`] bytes with the CRLF.
//! - Version 2 (binary): the 12-byte [`V2_SIGNATURE`], version/command (`0x20` LOCAL, `0x21`
//!   PROXY), family/protocol (`0x11` TCP over IPv4, `0x21` TCP over IPv6, `0x00` UNSPEC,
//!   `0x31` a UNIX stream), a big-endian length and that many bytes: the addresses, then
//!   TLVs, which are skipped. The length is bounded by [`V2_MAX_LEN`].
//!
//! The result is the client's address, or `None` where the header names none (v1
//! `UNKNOWN`, v2 `LOCAL`, `UNSPEC`, a UNIX socket): then the socket's own peer stays. Any
//! byte that cannot start or continue a valid header is an error at once, so garbage is
//! refused on its first bytes; a header that never completes is the caller's to time out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest version 1 line, `\r\n` included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The first 12 bytes of every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The largest version 2 address-and-TLV block accepted.
pub const V2_MAX_LEN: usize = 4096;
/// The longest header of either version.
pub const MAX_HEADER: usize = 16 + V2_MAX_LEN;

const V1_PREFIX: &[u8] = b"PROXY ";

/// What the bytes so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning of a header: more bytes are needed.
    Need,
    /// A complete header of `consumed` bytes; `source` is the client's address, if it names
    /// one. The bytes after `consumed` are the connection's own.
    Done {
        source: Option<SocketAddr>,
        consumed: usize,
    },
}

/// Why the bytes are not a PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyError(pub &'static str);

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad PROXY protocol header: {}", self.0)
    }
}

impl std::error::Error for ProxyError {}

/// Parse the header at the start of `buf` (stateless: give it everything received so far).
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Need);
    };
    if first == b'P' {
        parse_v1(buf)
    } else if first == V2_SIGNATURE[0] {
        parse_v2(buf)
    } else {
        Err(ProxyError("neither a v1 nor a v2 header"))
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(ProxyError("v1: no \"PROXY \""));
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if let Some(cr) = window.iter().position(|&b| b == b'\r') {
            if cr + 1 < window.len() {
                return Err(ProxyError("v1: CR not followed by LF"));
            }
        }
        if buf.len() >= V1_MAX {
            return Err(ProxyError("v1: line longer than 107 bytes"));
        }
        return Ok(Parsed::Need);
    };
    if lf < V1_PREFIX.len() + 1 || window[lf - 1] != b'\r' {
        return Err(ProxyError("v1: LF without CR"));
    }
    let line = &window[V1_PREFIX.len()..lf - 1];
    if line.contains(&b'\r') {
        return Err(ProxyError("v1: CR inside the line"));
    }
    let line = std::str::from_utf8(line).map_err(|_| ProxyError("v1: not ASCII"))?;
    let consumed = lf + 1;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or("");
    if proto == "UNKNOWN" {
        // The rest of the line is ignored (the specification says so).
        return Ok(Parsed::Done {
            source: None,
            consumed,
        });
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ProxyError("v1: protocol not TCP4, TCP6 or UNKNOWN")),
    };
    let f: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = f[..] else {
        return Err(ProxyError("v1: not 4 fields after the protocol"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        if v6 {
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ProxyError("v1: bad IPv6 address"))
        } else {
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProxyError("v1: bad IPv4 address"))
        }
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProxyError("v1: bad port"));
        }
        s.parse().map_err(|_| ProxyError("v1: bad port"))
    };
    let src = ip(src)?;
    ip(dst)?;
    let sport = port(sport)?;
    port(dport)?;
    Ok(Parsed::Done {
        source: Some(SocketAddr::new(src, sport)),
        consumed,
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError("v2: bad signature"));
    }
    if let Some(&ver_cmd) = buf.get(12) {
        if ver_cmd >> 4 != 2 {
            return Err(ProxyError("v2: version not 2"));
        }
        if ver_cmd & 0x0F > 1 {
            return Err(ProxyError("v2: command not LOCAL or PROXY"));
        }
    }
    if let Some(&fam) = buf.get(13) {
        if fam >> 4 > 3 || fam & 0x0F > 2 {
            return Err(ProxyError("v2: unknown address family or protocol"));
        }
    }
    if buf.len() < 16 {
        return Ok(Parsed::Need);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_LEN {
        return Err(ProxyError("v2: header longer than the limit"));
    }
    let (local, fam) = (buf[12] & 0x0F == 0, buf[13]);
    let need = match fam {
        0x11 if !local => 12,
        0x21 if !local => 36,
        _ => 0,
    };
    if len < need {
        return Err(ProxyError("v2: address block too short for its family"));
    }
    if buf.len() < 16 + len {
        return Ok(Parsed::Need);
    }
    let consumed = 16 + len;
    let a = &buf[16..consumed];
    let source = if local {
        // A health check from the proxy itself: its own address is the real one.
        None
    } else {
        match fam {
            0x11 => {
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Some(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([a[8], a[9]]),
                ))
            }
            0x21 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[..16]);
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(o)),
                    u16::from_be_bytes([a[32], a[33]]),
                ))
            }
            // UNSPEC (family or protocol), or a UNIX stream: keep the socket's own address.
            f if f >> 4 == 0 || f & 0x0F == 0 || f == 0x31 => None,
            _ => return Err(ProxyError("v2: not a stream protocol")),
        }
    };
    Ok(Parsed::Done { source, consumed })
}

/// One connection's header being read: the bytes of it received so far (only when it spans
/// reads; at most [`MAX_HEADER`]).
#[derive(Debug, Default)]
pub struct ProxyConn {
    buf: Vec<u8>,
}

impl ProxyConn {
    pub fn new() -> ProxyConn {
        ProxyConn::default()
    }

    /// Feed one received chunk. `Done { consumed }` counts the bytes of *this* chunk that
    /// belong to the header: `data[consumed..]` is the connection's own data. After `Done` or
    /// an error the state is spent (the caller drops it).
    pub fn read(&mut self, data: &[u8]) -> Result<Parsed, ProxyError> {
        if self.buf.is_empty() {
            match parse(data)? {
                Parsed::Need => {
                    if data.len() >= MAX_HEADER {
                        return Err(ProxyError("header longer than the limit"));
                    }
                    self.buf.extend_from_slice(data);
                    Ok(Parsed::Need)
                }
                done => Ok(done),
            }
        } else {
            let old = self.buf.len();
            let take = data.len().min(MAX_HEADER - old);
            self.buf.extend_from_slice(&data[..take]);
            match parse(&self.buf)? {
                Parsed::Need => {
                    if self.buf.len() >= MAX_HEADER {
                        return Err(ProxyError("header longer than the limit"));
                    }
                    Ok(Parsed::Need)
                }
                Parsed::Done { source, consumed } => {
                    // The earlier bytes were an incomplete header: it ends in this chunk.
                    debug_assert!(consumed > old);
                    self.buf = Vec::new();
                    Ok(Parsed::Done {
                        source,
                        consumed: consumed - old,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
