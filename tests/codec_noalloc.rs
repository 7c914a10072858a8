//! Allocation behaviour of the decoder, checked with a counting global allocator (one test in
//! this binary, so no other test thread allocates while it counts):
//! - PINGREQ decodes without allocating (both decoders, both versions);
//! - `decode_packet_shared` of a PUBLISH allocates nothing and its topic and payload point into
//!   the caller's buffer (shared, not copied);
//! - `decode_publish_view` (the worker's PUBLISH path) allocates nothing either: topic and
//!   payload are the buffer's own bytes;
//! - `decode_packet` copies a PUBLISH's topic and payload out of the buffer, once each.
mod counting;

use counting::thread_allocs as allocs;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq::protocol::{
    decode_packet, decode_packet_shared, decode_publish_view, encode_packet, Packet,
    ProtocolVersion, Publish, PublishProperties, QoS,
};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

fn wire(p: &Packet, v: ProtocolVersion) -> Bytes {
    let mut out = BytesMut::new();
    encode_packet(p, v, &mut out);
    out.freeze()
}

fn publish(qos: QoS, payload_len: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from_static("sensors/device-42/temperature"),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 7 },
        payload: Bytes::from(vec![0xA5u8; payload_len]),
        properties: PublishProperties::default(),
    })
}

#[test]
fn decoder_allocations() {
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        // --- PINGREQ: nothing allocated, whichever decoder.
        let ping = wire(&Packet::PingReq, v);
        let ping_slice: &[u8] = &ping;
        let before = allocs();
        for _ in 0..100 {
            let d = decode_packet(std::hint::black_box(ping_slice), Some(v), u32::MAX);
            assert_eq!(d, Ok(Some((Packet::PingReq, 2))));
            let d = decode_packet_shared(std::hint::black_box(&ping), Some(v), u32::MAX);
            assert_eq!(d, Ok(Some((Packet::PingReq, 2))));
        }
        assert_eq!(allocs() - before, 0, "{v:?}: PINGREQ decode allocated");

        for (qos, len) in [
            (QoS::AtMostOnce, 16),
            (QoS::AtLeastOnce, 16),
            (QoS::AtMostOnce, 1024),
        ] {
            let p = publish(qos, len);
            let w = wire(&p, v);
            // Make the buffer shared up front, as a receive buffer handed out in pieces would
            // be (the first clone of a `Bytes` built from a Vec allocates its reference count).
            let keep = w.clone();
            let range = w.as_ptr_range();

            // --- Shared decode: no allocation, topic and payload inside the buffer.
            let before = allocs();
            let (d, n) = decode_packet_shared(&w, Some(v), u32::MAX)
                .unwrap()
                .unwrap();
            let during = allocs() - before;
            assert_eq!(n, w.len());
            assert_eq!(during, 0, "{v:?} {qos:?} {len}: shared decode allocated");
            let Packet::Publish(d) = d else {
                panic!("not a PUBLISH: {d:?}")
            };
            assert_eq!(Packet::Publish(d.clone()), p);
            let pr = d.payload.as_ptr_range();
            assert!(
                range.start <= pr.start && pr.end <= range.end,
                "payload was copied"
            );
            assert_eq!(pr.end, range.end, "payload is the end of the packet");
            let tr = d.topic.as_bytes().as_ptr_range();
            assert!(
                range.start <= tr.start && tr.end <= range.end,
                "topic was copied"
            );

            // --- In-place decode (the worker's PUBLISH path): no allocation, topic and payload
            // are the buffer's own bytes.
            let slice: &[u8] = &w;
            let before = allocs();
            let (view, n) = decode_publish_view(slice, v, u32::MAX).unwrap().unwrap();
            let during = allocs() - before;
            assert_eq!(during, 0, "{v:?} {qos:?} {len}: in-place decode allocated");
            assert_eq!(n, w.len());
            assert_eq!(view.payload.as_ptr_range().end, range.end);
            assert!(range.contains(&view.payload.as_ptr()) || len == 0);
            assert!(
                range.contains(&view.topic_bytes().as_ptr()),
                "topic was copied"
            );
            assert_eq!(Packet::Publish(view.to_publish().unwrap()), p);

            // --- Copying decode: topic and payload copied once each, outside the buffer.
            let slice: &[u8] = &w;
            let before = allocs();
            let (d, _) = decode_packet(slice, Some(v), u32::MAX).unwrap().unwrap();
            let during = allocs() - before;
            assert_eq!(
                during, 2,
                "{v:?} {qos:?} {len}: one copy each of topic and payload"
            );
            let Packet::Publish(d) = d else {
                panic!("not a PUBLISH: {d:?}")
            };
            assert!(!range.contains(&d.payload.as_ptr()));
            assert_eq!(Packet::Publish(d), p);
            drop(keep);
        }
    }
    // The counter is live: an allocation is seen.
    let before = allocs();
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
    assert!(allocs() > before);
    drop(v);
}
