//! Feeds arbitrary bytes to the decoder in every connection state (before CONNECT, 3.1.1, 5.0).
//! For every packet that decodes:
//! - the copying, the zero-copy and (for PUBLISH) the in-place decoders agree,
//! - every strict prefix of the packet asks for more bytes,
//! - it re-encodes to exactly `encoded_len` bytes, and that decodes to an equal packet.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringmq::protocol::{
    decode_packet, decode_packet_shared, decode_publish_view, encode_packet, encoded_len, Packet,
    ProtocolVersion,
};

fuzz_target!(|data: &[u8]| {
    let shared = Bytes::copy_from_slice(data);
    for version in [
        None,
        Some(ProtocolVersion::V31),
        Some(ProtocolVersion::V311),
        Some(ProtocolVersion::V5),
    ] {
        check(data, &shared, version);
    }
});

fn check(data: &[u8], shared: &Bytes, version: Option<ProtocolVersion>) {
    let res = decode_packet(data, version, u32::MAX);
    assert_eq!(res, decode_packet_shared(shared, version, u32::MAX));
    if let (Some(v), Some(b)) = (version, data.first()) {
        if b >> 4 == 3 {
            // The in-place PUBLISH decoder (the broker's receive path) agrees.
            let view = decode_publish_view(data, v, u32::MAX)
                .map(|r| r.map(|(p, n)| (Packet::Publish(p.to_publish().unwrap()), n)));
            assert_eq!(view, res);
        }
    }
    let Ok(Some((packet, consumed))) = res else {
        return;
    };
    assert!(consumed >= 2 && consumed <= data.len());
    assert_eq!(
        decode_packet(&data[..consumed - 1], version, u32::MAX),
        Ok(None)
    );

    let (enc_version, dec_version) = match &packet {
        Packet::Connect(c) => (c.protocol, None),
        _ => (
            version.expect("only CONNECT decodes before CONNECT"),
            version,
        ),
    };
    let mut out = BytesMut::new();
    let written = encode_packet(&packet, enc_version, &mut out);
    assert_eq!(written, out.len());
    assert_eq!(encoded_len(&packet, enc_version), written);
    match decode_packet(&out, dec_version, u32::MAX) {
        Ok(Some((again, n))) => {
            assert_eq!(n, out.len());
            assert_eq!(again, packet);
        }
        other => panic!("re-encoded {packet:?} as {:?} -> {other:?}", &out[..]),
    }
}
