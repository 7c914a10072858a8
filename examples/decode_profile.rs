//! A fixed number of decodes of one packet, for instruction counts under callgrind (the shared
//! development VMs have no hardware counters and noisy wall-clock times):
//!
//! ```text
//! cargo build --profile bench --example decode_profile
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/examples/decode_profile publish copy 100000
//! callgrind_annotate --inclusive=yes cg.out | grep -E 'decode_packet(_shared)? |decode_publish_view|drop_in_place<ringmq::protocol::types::Packet> '
//! ```
//!
//! Mode `view` (PUBLISH only) runs `decode_publish_view`, the worker's PUBLISH path; its
//! result owns nothing, so there is no drop.
//!
//! Inclusive Ir of `decode_packet` (or `decode_packet_shared`, `decode_publish_view`) / N =
//! instructions per decode;
//! `drop_in_place<Packet>` / N = instructions to drop the result. Packets as in `benches/codec.rs`
//! (MQTT 3.1.1, QoS 0, 29-byte topic, 16-byte payload), allocator mimalloc as in the broker.
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq::protocol::{
    decode_packet, decode_packet_shared, decode_publish_view, encode_packet, Packet,
    ProtocolVersion, Publish, PublishProperties, QoS,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: decode_profile <publish|pingreq> <copy|shared|view> [N]";
    let packet = match args.get(1).map(String::as_str) {
        Some("pingreq") => Packet::PingReq,
        Some("publish") => Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteString::from_static("sensors/device-42/temperature"),
            packet_id: 0,
            payload: Bytes::from(vec![0xA5u8; 16]),
            properties: PublishProperties::default(),
        }),
        _ => panic!("{usage}"),
    };
    let mode = match args.get(2).map(String::as_str) {
        Some(m @ ("copy" | "shared" | "view")) => m,
        _ => panic!("{usage}"),
    };
    let n: u64 = args.get(3).map_or(1_000_000, |s| s.parse().expect(usage));
    let v = Some(ProtocolVersion::V311);
    let mut out = BytesMut::new();
    encode_packet(&packet, ProtocolVersion::V311, &mut out);
    let wire = out.freeze();
    let slice: &[u8] = &wire;
    let t = std::time::Instant::now();
    for _ in 0..n {
        if mode == "view" {
            let r =
                decode_publish_view(black_box(slice), ProtocolVersion::V311, black_box(1 << 20));
            assert!(matches!(&r, Ok(Some(_))));
            black_box(&r);
            continue;
        }
        let r = if mode == "shared" {
            decode_packet_shared(black_box(&wire), black_box(v), black_box(1 << 20))
        } else {
            decode_packet(black_box(slice), black_box(v), black_box(1 << 20))
        };
        assert!(matches!(&r, Ok(Some(_))));
        black_box(&r);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    eprintln!(
        "{} {}: {ns:.1} ns per decode (wall clock)",
        args[1], args[2]
    );
}
