//! How often a PUBLISH sent right after another client's SUBSCRIBE (before its SUBACK) misses
//! that subscriber, against a running broker (`scripts/visibility.sh` starts it).
//!
//! ```text
//! visibility SUB_ADDR PUB_ADDR TRIALS [DELAY_US] [v5|v311] [keep|unsubscribe]
//! ```
//!
//! One subscriber connection (on SUB_ADDR) and one publisher connection (on PUB_ADDR); with
//! `--worker-port-base` the two addresses choose the workers. Each trial, on a topic of its own:
//! 1. the subscriber writes SUBSCRIBE `vis/<n>` (QoS 1);
//! 2. DELAY_US microseconds later (busy wait; 0 = at once), the publisher writes a QoS 1
//!    PUBLISH "race" on `vis/<n>`: the broker gets it before it has sent the SUBACK, or about
//!    then;
//! 3. the subscriber reads its SUBACK, then the publisher sends a QoS 1 PUBLISH "mark" on the
//!    same topic, which the broker gets after the SUBACK was sent and so must deliver;
//! 4. the subscriber reads until "mark": "race" arrived before it (messages of one publisher
//!    on one topic keep their order) or was missed. No timeout decides anything.
//! 5. `unsubscribe`: the subscriber unsubscribes again, so its worker holds no subscription
//!    between trials (the publisher's worker then posts a PUBLISH to it only if it already
//!    sees the new subscription); `keep` (default) leaves every subscription in place.
//!
//! The publisher's version (default v5) decides its acks: an MQTT 5 publisher told 0x10 No
//! matching subscribers for "race" has it delivered to nobody (see `broker::router`). Prints
//! one line: trials, misses, miss %, and how many "race" PUBACKs said 0x10.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq::protocol::*;

struct Link {
    s: TcpStream,
    v: ProtocolVersion,
    rx: BytesMut,
}

impl Link {
    fn connect(addr: &str, id: &str, v: ProtocolVersion) -> Link {
        let s = TcpStream::connect(addr).expect("connect to the broker");
        s.set_nodelay(true).unwrap();
        let mut l = Link {
            s,
            v,
            rx: BytesMut::new(),
        };
        l.send(&Packet::Connect(Box::new(Connect {
            protocol: v,
            clean_start: true,
            keep_alive: 60,
            client_id: ByteString::from(id),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        })));
        match l.next() {
            Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS => l,
            other => panic!("CONNACK expected, got {other:?}"),
        }
    }

    fn send(&mut self, p: &Packet) {
        let mut buf = BytesMut::new();
        encode_packet(p, self.v, &mut buf);
        self.s.write_all(&buf).expect("write");
    }

    fn next(&mut self) -> Packet {
        loop {
            if let Some((p, used)) =
                decode_packet(&self.rx, Some(self.v), u32::MAX).expect("valid packet")
            {
                let _ = self.rx.split_to(used);
                return p;
            }
            let mut buf = [0u8; 4096];
            let n = self.s.read(&mut buf).expect("read");
            assert!(n > 0, "the broker closed the connection");
            self.rx.extend_from_slice(&buf[..n]);
        }
    }

    fn publish(&mut self, topic: &str, payload: &'static [u8], pid: u16) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteString::from(topic),
            packet_id: pid,
            payload: Bytes::from_static(payload),
            properties: Default::default(),
        }));
    }

    fn puback(&mut self, pid: u16) -> ReasonCode {
        loop {
            match self.next() {
                Packet::PubAck(a) if a.packet_id == pid => return a.reason,
                Packet::PubAck(_) => {}
                other => panic!("publisher: unexpected {other:?}"),
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: visibility SUB_ADDR PUB_ADDR TRIALS [DELAY_US] [v5|v311] [keep|unsubscribe]"
        );
        std::process::exit(2);
    }
    let trials: u32 = args[3].parse().expect("TRIALS");
    let delay = Duration::from_micros(args.get(4).map_or(0, |d| d.parse().expect("DELAY_US")));
    let pub_v = match args.get(5).map(String::as_str) {
        None | Some("v5") => ProtocolVersion::V5,
        Some("v311") => ProtocolVersion::V311,
        Some(other) => panic!("version {other}: v5 or v311"),
    };
    let unsubscribe = args.get(6).map(String::as_str) == Some("unsubscribe");
    let mut sub = Link::connect(&args[1], "vis-sub", ProtocolVersion::V5);
    let mut publ = Link::connect(&args[2], "vis-pub", pub_v);
    let (mut misses, mut no_match) = (0u32, 0u32);
    for n in 0..trials {
        let topic = format!("vis/{n}");
        let pid = (n % 30000) as u16 * 2 + 1;
        sub.send(&Packet::Subscribe(Subscribe {
            packet_id: pid,
            filters: vec![(
                ByteString::from(topic.as_str()),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
            properties: Default::default(),
        }));
        if !delay.is_zero() {
            let t = Instant::now();
            while t.elapsed() < delay {
                std::hint::spin_loop();
            }
        }
        publ.publish(&topic, b"race", pid);
        let mut raced = false;
        loop {
            match sub.next() {
                Packet::SubAck(a) if a.packet_id == pid => break,
                // (Not expected: the broker sends the SUBACK first.)
                Packet::Publish(p) => {
                    sub.send(&Packet::PubAck(PubResp::new(p.packet_id)));
                    raced = true;
                }
                other => panic!("subscriber: SUBACK expected, got {other:?}"),
            }
        }
        if publ.puback(pid) == ReasonCode::NO_MATCHING_SUBSCRIBERS {
            no_match += 1;
        }
        publ.publish(&topic, b"mark", pid + 1);
        publ.puback(pid + 1);
        loop {
            match sub.next() {
                Packet::Publish(p) => {
                    sub.send(&Packet::PubAck(PubResp::new(p.packet_id)));
                    if &p.payload[..] == b"mark" {
                        break;
                    }
                    raced = true;
                }
                other => panic!("subscriber: unexpected {other:?}"),
            }
        }
        if !raced {
            misses += 1;
        }
        if unsubscribe {
            sub.send(&Packet::Unsubscribe(Unsubscribe {
                packet_id: pid,
                filters: vec![ByteString::from(topic.as_str())],
                user_properties: Default::default(),
            }));
            match sub.next() {
                Packet::UnsubAck(_) => {}
                other => panic!("subscriber: UNSUBACK expected, got {other:?}"),
            }
        }
    }
    println!(
        "trials={trials} misses={misses} miss%={:.2} race_puback_0x10={no_match}",
        100.0 * f64::from(misses) / f64::from(trials)
    );
}
