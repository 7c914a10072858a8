//! Broker memory per idle connection (CONNECT accepted, keep-alive 60, nothing else): the
//! budget a million connections depend on. It is the fixed-size slots a connection occupies in
//! the worker's tables (reserved up front, `slot_bytes_per_connection`) plus the heap it keeps:
//! a counting global allocator tracks live heap bytes, and the heap figure is the growth
//! between 300 and 1,300 connections divided by 1,000, so start-up reservations do not count. The clients write pre-encoded CONNECT bytes and read
//! CONNACK into a stack buffer, so the test's own side allocates nothing per connection that
//! stays alive (their TcpStreams live in a vector reserved up front).
//! Measured 388-400 B (2026-12: 220 B of slots, 168-180 B of heap); the budget of 440 B leaves
//! room for the heap's run-to-run variation and for hash-table growth landing in the window,
//! and keeps RSS under the 512 B target of issue #15.
//! (One test in this binary: no other test thread allocates while it counts.)
mod counting;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringmq::protocol::{encode_packet, Packet, ProtocolVersion};
use support::*;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Open `n` idle connections (MQTT 3.1.1 and 5.0 alternating), each CONNACKed.
fn open(b: &TestBroker, from: usize, n: usize, conns: &mut Vec<TcpStream>, connects: &[Vec<u8>]) {
    for (i, bytes) in connects.iter().enumerate().skip(from).take(n) {
        let mut s = TcpStream::connect(b.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut ack = [0u8; 2];
        s.read_exact(&mut ack).expect("CONNACK header");
        assert_eq!(ack[0], 0x20, "connection {i}: CONNACK");
        let mut rest = [0u8; 64];
        s.read_exact(&mut rest[..ack[1] as usize]).unwrap();
        assert_eq!(
            rest[1],
            0,
            "connection {i}: CONNACK code (keep {:?})",
            &rest[..2]
        );
        conns.push(s);
    }
}

#[test]
fn memory_per_idle_connection_stays_under_440_bytes() {
    const WARM: usize = 300;
    const MORE: usize = 1000;
    let b = TestBroker::start_with(1, |c| c.max_connections_per_worker = 4096);
    // Everything the loop allocates per connection on our side is made up front.
    let connects: Vec<Vec<u8>> = (0..WARM + MORE)
        .map(|i| {
            let v = if i % 2 == 0 {
                ProtocolVersion::V311
            } else {
                ProtocolVersion::V5
            };
            let c = connect_packet(v, &format!("idle-mem-{i:05}"), 60, true);
            let mut out = bytes::BytesMut::new();
            encode_packet(&Packet::Connect(Box::new(c)), v, &mut out);
            out.to_vec()
        })
        .collect();
    let mut conns = Vec::with_capacity(WARM + MORE);
    open(&b, 0, WARM, &mut conns, &connects);
    std::thread::sleep(Duration::from_millis(300));
    let before = counting::live_bytes();
    open(&b, WARM, MORE, &mut conns, &connects);
    std::thread::sleep(Duration::from_millis(300));
    let after = counting::live_bytes();
    let heap = (after - before) / MORE as isize;
    let slots = ringmq::broker::slot_bytes_per_connection() as isize;
    let per = heap + slots;
    eprintln!("broker memory per idle connection: {per} B = {slots} B of slots + {heap} B heap");
    assert_eq!(b.metric("connections_current"), (WARM + MORE) as u64);
    assert!(
        per <= 440,
        "{per} B per idle connection ({slots} B of slots + {heap} B heap): budget 440 B \
         (measured 388-400 B; the target for RSS is 512 B)"
    );
    drop(conns);
}
