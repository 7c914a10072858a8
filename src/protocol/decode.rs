//! Packet decoder. CONTRACT (implemented by the codec work):
//!
//! `decode_packet(buf, version, max_packet_size)`:
//! - `buf` may hold a partial packet, exactly one, or several.
//! - `Ok(None)`: more bytes are needed (never an error for a merely short buffer, unless the
//!   fixed header already proves the packet is too large or malformed).
//! - `Ok(Some((packet, consumed)))`: one packet decoded from `buf[..consumed]`.
//! - `Err(e)`: malformed / protocol error; the connection must be closed with `e.reason_code()`.
//! - `version` is `None` before CONNECT (only a CONNECT may be decoded then: anything else is
//!   `DecodeError::Protocol`) and the negotiated version afterwards.
//! - `max_packet_size` bounds the whole packet (fixed header included), `DecodeError::TooLarge`.
use super::error::DecodeError;
use super::types::{Packet, ProtocolVersion};

/// Parsed fixed header: first byte and remaining length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub first_byte: u8,
    pub remaining_length: u32,
    /// Length of the fixed header itself (2..=5).
    pub header_len: usize,
}

pub fn decode_packet(
    buf: &[u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    unimplemented!("codec work in progress")
}
