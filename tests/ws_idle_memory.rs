//! Broker memory per idle WebSocket connection (upgraded, CONNECT accepted, keep-alive 60,
//! nothing else), counted as `tests/idle_memory.rs` counts a plain one: the fixed-size slots
//! plus the live heap growth between 300 and 1,300 connections divided by 1,000. What a
//! WebSocket connection adds is its `WsConn` (boxed) and its entry in the worker's map of
//! WebSocket states; the budget is the same 1 KiB. The clients write pre-built bytes and read
//! into stack buffers.
//! (One test in this binary: no other test thread allocates while it counts.)
mod counting;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringmq::protocol::{encode_packet, Packet, ProtocolVersion};
use support::*;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const ANSWER: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

/// The upgrade request and the CONNECT in one masked binary frame, in one write.
fn request(connect: &[u8]) -> Vec<u8> {
    let mut out = b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        .to_vec();
    assert!(connect.len() < 126);
    let mask = [1u8, 2, 3, 4];
    out.extend_from_slice(&[0x82, 0x80 | connect.len() as u8]);
    out.extend_from_slice(&mask);
    out.extend(connect.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn open(addr: SocketAddr, from: usize, n: usize, conns: &mut Vec<TcpStream>, reqs: &[Vec<u8>]) {
    for (i, bytes) in reqs.iter().enumerate().skip(from).take(n) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut answer = [0u8; 256];
        s.read_exact(&mut answer[..ANSWER.len()]).expect("101");
        assert_eq!(&answer[..ANSWER.len()], ANSWER, "connection {i}: upgrade");
        let mut frame = [0u8; 2];
        s.read_exact(&mut frame).expect("frame header");
        assert_eq!(frame[0], 0x82, "connection {i}: binary frame");
        let mut ack = [0u8; 126];
        s.read_exact(&mut ack[..frame[1] as usize]).unwrap();
        assert_eq!((ack[0], ack[3]), (0x20, 0), "connection {i}: CONNACK");
        conns.push(s);
    }
}

#[test]
fn memory_per_idle_websocket_connection() {
    const WARM: usize = 300;
    const MORE: usize = 1000;
    let b = TestBroker::start_with(1, |c| {
        c.max_connections_per_worker = 4096;
        c.ws_listen = vec!["127.0.0.1:0".parse().unwrap()];
    });
    let addr = b.handle.as_ref().unwrap().ws_addrs()[0];
    let reqs: Vec<Vec<u8>> = (0..WARM + MORE)
        .map(|i| {
            // MQTT 3.1.1 and 5.0 alternating, as in tests/idle_memory.rs.
            let v = if i % 2 == 0 {
                ProtocolVersion::V311
            } else {
                ProtocolVersion::V5
            };
            let c = connect_packet(v, &format!("ws-mem-{i:05}"), 60, true);
            let mut out = bytes::BytesMut::new();
            encode_packet(&Packet::Connect(Box::new(c)), v, &mut out);
            request(&out)
        })
        .collect();
    let mut conns = Vec::with_capacity(WARM + MORE);
    open(addr, 0, WARM, &mut conns, &reqs);
    std::thread::sleep(Duration::from_millis(300));
    let before = counting::live_bytes();
    open(addr, WARM, MORE, &mut conns, &reqs);
    std::thread::sleep(Duration::from_millis(300));
    let after = counting::live_bytes();
    let heap = (after - before) / MORE as isize;
    let slots = ringmq::broker::slot_bytes_per_connection() as isize;
    let per = heap + slots;
    eprintln!(
        "broker memory per idle WebSocket connection: {per} B = {slots} B of slots + {heap} B heap"
    );
    assert_eq!(b.metric("connections_current"), (WARM + MORE) as u64);
    assert!(
        per < 1024,
        "{per} B per idle WebSocket connection (budget 1 KiB)"
    );
    drop(conns);
}
