//! Byte vectors for the PROXY protocol parser: both versions, every family, split reads,
//! garbage and limits, and the bytes after the header passed through.

use super::*;

const MQTT: &[u8] = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";

fn v4(a: [u8; 4], port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
}

/// A v2 header: `ver_cmd`, `fam`, then `block` (addresses and TLVs).
fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(ver_cmd);
    h.push(fam);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

fn v2_tcp4() -> Vec<u8> {
    // 203.0.113.7:51000 -> 192.0.2.1:1883, then a TLV (type 0x04 NOOP, 3 bytes).
    let mut b = vec![203, 0, 113, 7, 192, 0, 2, 1];
    b.extend_from_slice(&51000u16.to_be_bytes());
    b.extend_from_slice(&1883u16.to_be_bytes());
    b.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3]);
    v2(0x21, 0x11, &b)
}

/// Feed `bytes` in chunks of `chunk`: the source and everything after the header.
fn feed(bytes: &[u8], chunk: usize) -> Result<(Option<SocketAddr>, Vec<u8>), ProxyError> {
    let mut p = ProxyConn::new();
    let mut chunks = bytes.chunks(chunk);
    for c in chunks.by_ref() {
        if let Parsed::Done { source, consumed } = p.read(c)? {
            let mut rest = c[consumed..].to_vec();
            for c in chunks {
                rest.extend_from_slice(c);
            }
            return Ok((source, rest));
        }
    }
    Err(ProxyError("test: incomplete"))
}

fn with_mqtt(h: &[u8]) -> Vec<u8> {
    [h, MQTT].concat()
}

#[test]
fn v1_tcp4_tcp6_unknown() {
    let h = b"PROXY TCP4 198.51.100.22 203.0.113.7 35646 1883\r\n";
    assert_eq!(
        parse(&with_mqtt(h)),
        Ok(Parsed::Done {
            source: v4([198, 51, 100, 22], 35646),
            consumed: h.len()
        })
    );
    let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 8883\r\n";
    assert_eq!(
        parse(h6),
        Ok(Parsed::Done {
            source: Some("[2001:db8::1]:4000".parse().unwrap()),
            consumed: h6.len()
        })
    );
    for u in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    ] {
        assert_eq!(
            parse(u),
            Ok(Parsed::Done {
                source: None,
                consumed: u.len()
            })
        );
    }
}

#[test]
fn v1_longest_line_is_accepted_and_longer_refused() {
    // UNKNOWN may carry anything up to the 107-byte bound.
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(V1_MAX - 2, b'x');
    line.extend_from_slice(b"\r\n");
    assert_eq!(line.len(), V1_MAX);
    assert_eq!(
        parse(&line),
        Ok(Parsed::Done {
            source: None,
            consumed: V1_MAX
        })
    );
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX - 1, b'x');
    long.extend_from_slice(b"\r\n");
    assert!(parse(&long).is_err());
    // Also when it arrives byte by byte, and without ever sending the CRLF.
    assert!(feed(&long, 1).is_err());
    let mut p = ProxyConn::new();
    assert_eq!(p.read(b"PROXY "), Ok(Parsed::Need));
    let mut res = Ok(Parsed::Need);
    for _ in V1_PREFIX.len()..V1_MAX {
        res = p.read(b"x");
        if res.is_err() {
            break;
        }
    }
    assert!(res.is_err(), "an endless v1 line must be refused");
}

#[test]
fn v1_malformed() {
    for bad in [
        &b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY\r\n",
        b"PROXX TCP4",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        assert!(feed(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn garbage_is_refused_on_the_first_bytes() {
    // An MQTT CONNECT, a TLS ClientHello, an HTTP request: not a header.
    assert!(parse(MQTT).is_err());
    assert!(parse(b"\x16\x03\x01\x02\x00").is_err());
    assert!(parse(b"GET /mqtt HTTP/1.1\r\n").is_err());
    assert!(parse(b"PRO\x00").is_err());
    assert!(parse(b"\r\n\r\n\0\r\nQUIX").is_err());
    // A valid prefix needs more, an empty one too.
    assert_eq!(parse(b""), Ok(Parsed::Need));
    assert_eq!(parse(b"PRO"), Ok(Parsed::Need));
    assert_eq!(parse(b"\r\n\r\n\0"), Ok(Parsed::Need));
}

#[test]
fn v2_tcp4_with_tlv_skipped() {
    let h = v2_tcp4();
    assert_eq!(
        parse(&with_mqtt(&h)),
        Ok(Parsed::Done {
            source: v4([203, 0, 113, 7], 51000),
            consumed: h.len()
        })
    );
}

#[test]
fn v2_tcp6() {
    let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut b = src.octets().to_vec();
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(&443u16.to_be_bytes());
    b.extend_from_slice(&1883u16.to_be_bytes());
    let h = v2(0x21, 0x21, &b);
    assert_eq!(
        parse(&h),
        Ok(Parsed::Done {
            source: Some(SocketAddr::new(IpAddr::V6(src), 443)),
            consumed: h.len()
        })
    );
}

#[test]
fn v2_local_unspec_unix_keep_the_socket_address() {
    // LOCAL: a health check; its address block (if any) is ignored.
    let local = v2(0x20, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
    let unspec = v2(0x21, 0x00, &[]);
    let unix = v2(0x21, 0x31, &[0u8; 216]);
    let local_empty = v2(0x20, 0x00, &[]);
    for h in [local, unspec, unix, local_empty] {
        assert_eq!(
            parse(&h),
            Ok(Parsed::Done {
                source: None,
                consumed: h.len()
            })
        );
    }
}

#[test]
fn v2_malformed() {
    let mut bad_sig = v2_tcp4();
    bad_sig[11] = b'X';
    let mut bad_version = v2_tcp4();
    bad_version[12] = 0x11;
    let mut bad_cmd = v2_tcp4();
    bad_cmd[12] = 0x22;
    let mut bad_fam = v2_tcp4();
    bad_fam[13] = 0x41;
    let mut udp = v2_tcp4();
    udp[13] = 0x12;
    let short4 = v2(0x21, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0]);
    let short6 = v2(0x21, 0x21, &[0; 35]);
    let mut too_long = v2(0x21, 0x00, &[]);
    too_long[14..16].copy_from_slice(&((V2_MAX_LEN + 1) as u16).to_be_bytes());
    for h in [
        bad_sig,
        bad_version,
        bad_cmd,
        bad_fam,
        udp,
        short4,
        short6,
        too_long,
    ] {
        assert!(parse(&h).is_err(), "{h:x?}");
        assert!(feed(&h, 1).is_err(), "{h:x?}");
    }
    // The largest block accepted.
    let max = v2(0x21, 0x00, &vec![0; V2_MAX_LEN]);
    assert_eq!(feed(&max, 1000), Ok((None, vec![])));
}

#[test]
fn split_byte_by_byte_and_the_rest_passes_through() {
    let v1 = with_mqtt(b"PROXY TCP4 198.51.100.22 203.0.113.7 35646 1883\r\n");
    let v2 = with_mqtt(&v2_tcp4());
    for (bytes, src) in [
        (&v1, v4([198, 51, 100, 22], 35646)),
        (&v2, v4([203, 0, 113, 7], 51000)),
    ] {
        for chunk in [1, 2, 3, 7, 15, 16, 17, 50, bytes.len()] {
            assert_eq!(
                feed(bytes, chunk),
                Ok((src, MQTT.to_vec())),
                "chunk {chunk}"
            );
        }
    }
}

#[test]
fn truncated_header_needs_more() {
    for h in [
        b"PROXY TCP4 198.51.100.22 203.0.113.7 35646 1883\r\n".to_vec(),
        v2_tcp4(),
    ] {
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(Parsed::Need), "{n} bytes");
        }
        let mut p = ProxyConn::new();
        assert_eq!(p.read(&h[..h.len() - 1]), Ok(Parsed::Need));
        assert_eq!(
            p.read(&with_mqtt(&h[h.len() - 1..])),
            match parse(&h).unwrap() {
                Parsed::Done { source, .. } => Ok(Parsed::Done {
                    source,
                    consumed: 1
                }),
                Parsed::Need => unreachable!(),
            }
        );
    }
}
