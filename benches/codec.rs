//! Codec micro-benchmarks: decode and encode of one packet per iteration.
//!
//! - `codec/decode/copy`: `decode_packet(&[u8], ..)`, the call the broker worker makes (strings
//!   and payload are copied out of the read buffer).
//! - `codec/decode/shared`: `decode_packet_shared(&Bytes, ..)` (zero-copy slices of the buffer).
//! - `codec/encode`: `encode_packet` into a reused `BytesMut` (cleared each iteration, so no
//!   growth after the first).
//!
//! One iteration = one packet; the time includes dropping the decoded packet (as the broker
//! does). The input goes through `black_box` so the compiler cannot fold the decode; the result
//! is observed through `black_box(&result)` (a reference: passing the ~270-byte result by value
//! would add a copy the broker never makes) and then dropped inside the timed closure.
//!
//! The global allocator is mimalloc, as in the broker binary (`src/main.rs`): the copying
//! decoder allocates for the topic and the payload, so the allocator is part of its cost.
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::protocol::{
    decode_packet, decode_packet_shared, decode_publish_view, encode_packet, Connect,
    ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// The broker's default maximum packet size (1 MiB).
const MAX: u32 = 1024 * 1024;

/// A typical CONNECT: 16-byte client id, user name and password, keep alive 60;
/// MQTT 5 adds Session Expiry Interval and Receive Maximum.
fn connect(v: ProtocolVersion) -> Packet {
    let properties = if v.is_v5() {
        ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            ..Default::default()
        }
    } else {
        ConnectProperties::default()
    };
    Packet::Connect(Box::new(Connect {
        protocol: v,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteString::from_static("bench-client-001"),
        will: None,
        username: Some(ByteString::from_static("user")),
        password: Some(Bytes::from_static(b"secret")),
        properties,
    }))
}

/// A PUBLISH to a 29-byte topic (no properties in MQTT 5).
fn publish(qos: QoS, payload_len: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from_static("sensors/device-42/temperature"),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 42 },
        payload: Bytes::from(vec![0xA5u8; payload_len]),
        properties: PublishProperties::default(),
    })
}

/// (name, packet, version the packet is encoded in, version the decoder is told).
fn cases() -> Vec<(String, Packet, ProtocolVersion, Option<ProtocolVersion>)> {
    let mut v = vec![
        ("connect_v311".into(), connect(V311), V311, None),
        ("connect_v5".into(), connect(V5), V5, None),
    ];
    for (ver, tag) in [(V311, "v311"), (V5, "v5")] {
        for (qos, q) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
            for (len, l) in [(16, "16B"), (1024, "1KiB")] {
                v.push((
                    format!("publish_{q}_{l}_{tag}"),
                    publish(qos, len),
                    ver,
                    Some(ver),
                ));
            }
        }
    }
    v.push(("pingreq_v311".into(), Packet::PingReq, V311, Some(V311)));
    v.push(("pingreq_v5".into(), Packet::PingReq, V5, Some(V5)));
    v
}

fn wire(p: &Packet, v: ProtocolVersion) -> Bytes {
    let mut out = BytesMut::new();
    encode_packet(p, v, &mut out);
    out.freeze()
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/decode/copy");
    g.throughput(Throughput::Elements(1));
    for (name, p, ev, dv) in cases() {
        let w = wire(&p, ev);
        // Sanity: the bytes decode to the packet.
        let (d, n) = decode_packet(&w, dv, MAX).unwrap().unwrap();
        assert_eq!((d, n), (p, w.len()));
        let buf: &[u8] = &w;
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = decode_packet(black_box(buf), black_box(dv), black_box(MAX));
                black_box(&r);
            })
        });
    }
    g.finish();

    // The broker's receive path for PUBLISH: decoded in place, nothing copied or counted.
    let mut g = c.benchmark_group("codec/decode/view");
    g.throughput(Throughput::Elements(1));
    for (name, p, ev, dv) in cases() {
        let (Packet::Publish(orig), Some(v)) = (&p, dv) else {
            continue;
        };
        let w = wire(&p, ev);
        let (view, n) = decode_publish_view(&w, v, MAX).unwrap().unwrap();
        assert_eq!((view.to_publish().unwrap(), n), (orig.clone(), w.len()));
        let buf: &[u8] = &w;
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = decode_publish_view(black_box(buf), black_box(v), black_box(MAX));
                black_box(&r);
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("codec/decode/shared");
    g.throughput(Throughput::Elements(1));
    for (name, p, ev, dv) in cases() {
        let w = wire(&p, ev);
        let (d, n) = decode_packet_shared(&w, dv, MAX).unwrap().unwrap();
        assert_eq!((d, n), (p, w.len()));
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = decode_packet_shared(black_box(&w), black_box(dv), black_box(MAX));
                black_box(&r);
            })
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/encode");
    g.throughput(Throughput::Elements(1));
    for (name, p, ev, _) in cases() {
        let mut out = BytesMut::with_capacity(4096);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let n = encode_packet(black_box(&p), black_box(ev), &mut out);
                black_box(&out[..]);
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
