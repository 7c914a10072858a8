//! Clock and latency stamp carried in every generated payload.
//!
//! Layout (little endian, 24 bytes): magic u32 | publisher id u32 | seq u64 | intended send
//! time u64 (CLOCK_MONOTONIC ns, comparable across processes on the same host).

pub const MAGIC: u32 = 0x4C51_4D52; // "RMQL"
pub const STAMP_LEN: usize = 24;

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

/// Fill `buf` (resized to `size.max(STAMP_LEN)`) with the stamp followed by filler.
pub fn write_payload(buf: &mut Vec<u8>, size: usize, s: Stamp) {
    let size = size.max(STAMP_LEN);
    if buf.len() != size {
        buf.clear();
        buf.resize(size, b'x');
    }
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&s.pub_id.to_le_bytes());
    buf[8..16].copy_from_slice(&s.seq.to_le_bytes());
    buf[16..24].copy_from_slice(&s.intended_ns.to_le_bytes());
}

/// Parse a stamp from the front of a payload; `None` if it is not one of ours.
pub fn read_payload(p: &[u8]) -> Option<Stamp> {
    let h = p.get(..STAMP_LEN)?;
    let u32at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&h[i..i + 8]);
        u64::from_le_bytes(a)
    };
    if u32at(0) != MAGIC {
        return None;
    }
    Some(Stamp {
        pub_id: u32at(4),
        seq: u64at(8),
        intended_ns: u64at(16),
    })
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
        write_payload(&mut b, 1, s);
        assert_eq!(b.len(), STAMP_LEN);
        assert_eq!(read_payload(&b), Some(s));
        assert_eq!(read_payload(&b[..STAMP_LEN - 1]), None);
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
