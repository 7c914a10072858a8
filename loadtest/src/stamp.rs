//! Clock and latency stamp carried in every generated payload.
//!
//! Two layouts, both little endian, the intended send time being CLOCK_MONOTONIC ns
//! (comparable across processes on the same host):
//! - payloads of 24 bytes or more: magic u32 | publisher id u32 | seq u64 | intended u64;
//! - payloads of 16..24 bytes (the classic "16-byte payload" benchmark): magic u8 |
//!   publisher id u24 | seq u32 | intended u64. The long magic's first byte (0x52) differs from
//!   the short one, so a reader never confuses them.

pub const MAGIC: u32 = 0x4C51_4D52; // "RMQL"
/// Size of the full stamp; payloads at least this big carry it.
pub const STAMP_LEN: usize = 24;
/// Smallest payload the generator sends (the compact stamp).
pub const MIN_PAYLOAD: usize = 16;
const SHORT_MAGIC: u8 = 0xA7;

/// CLOCK_MONOTONIC in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid, owned timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub pub_id: u32,
    pub seq: u64,
    pub intended_ns: u64,
}

/// Fill `buf` (resized to `size.max(MIN_PAYLOAD)`) with the stamp followed by filler. Below
/// STAMP_LEN bytes the compact stamp is used: publisher ids wrap at 2^24 and sequence numbers
/// at 2^32 (far beyond any bounded run).
pub fn write_payload(buf: &mut Vec<u8>, size: usize, s: Stamp) {
    let size = size.max(MIN_PAYLOAD);
    if buf.len() != size {
        buf.clear();
        buf.resize(size, b'x');
    }
    if size >= STAMP_LEN {
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&s.pub_id.to_le_bytes());
        buf[8..16].copy_from_slice(&s.seq.to_le_bytes());
        buf[16..24].copy_from_slice(&s.intended_ns.to_le_bytes());
    } else {
        let head = (s.pub_id << 8) | SHORT_MAGIC as u32;
        buf[0..4].copy_from_slice(&head.to_le_bytes());
        buf[4..8].copy_from_slice(&(s.seq as u32).to_le_bytes());
        buf[8..16].copy_from_slice(&s.intended_ns.to_le_bytes());
    }
}

/// Parse a stamp from the front of a payload; `None` if it is not one of ours.
pub fn read_payload(p: &[u8]) -> Option<Stamp> {
    let u32at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let u64at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&p[i..i + 8]);
        u64::from_le_bytes(a)
    };
    if p.len() >= STAMP_LEN && u32at(0) == MAGIC {
        return Some(Stamp {
            pub_id: u32at(4),
            seq: u64at(8),
            intended_ns: u64at(16),
        });
    }
    if (MIN_PAYLOAD..STAMP_LEN).contains(&p.len()) && p[0] == SHORT_MAGIC {
        return Some(Stamp {
            pub_id: u32at(0) >> 8,
            seq: u32at(4).into(),
            intended_ns: u64at(8),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrip_and_padding() {
        let s = Stamp {
            pub_id: 77,
            seq: u64::MAX - 3,
            intended_ns: now_ns(),
        };
        let mut b = Vec::new();
        write_payload(&mut b, 100, s);
        assert_eq!(b.len(), 100);
        assert_eq!(read_payload(&b), Some(s));
        write_payload(&mut b, STAMP_LEN, s);
        assert_eq!(b.len(), STAMP_LEN);
        assert_eq!(read_payload(&b), Some(s));
        b[0] ^= 1;
        assert_eq!(read_payload(&b), None);
    }

    #[test]
    fn compact_stamp_for_small_payloads() {
        let s = Stamp {
            pub_id: 999_999,
            seq: 123_456,
            intended_ns: now_ns(),
        };
        let mut b = Vec::new();
        write_payload(&mut b, 1, s);
        assert_eq!(b.len(), MIN_PAYLOAD);
        assert_eq!(read_payload(&b), Some(s));
        write_payload(&mut b, 20, s);
        assert_eq!(b.len(), 20);
        assert_eq!(read_payload(&b), Some(s));
        assert_eq!(read_payload(&b[..MIN_PAYLOAD - 1]), None);
        b[0] ^= 1;
        assert_eq!(read_payload(&b), None);
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }
}
