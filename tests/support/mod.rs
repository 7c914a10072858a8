//! Shared helpers for integration tests: start a broker in-process on loopback, and a raw MQTT
//! client over a blocking TcpStream built on ringmq's own codec (for exact control of bytes and
//! timing). Real third-party clients (rumqttc, mosquitto_pub/sub) are used in the tests too.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq::broker::BrokerHandle;
use ringmq::config::Config;
use ringmq::protocol::*;

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod netns;

pub struct TestBroker {
    pub handle: Option<BrokerHandle>,
    /// The shared (SO_REUSEPORT) address.
    pub addr: SocketAddr,
    /// worker_addrs[i] lands on worker i.
    pub worker_addrs: Vec<SocketAddr>,
}

impl TestBroker {
    pub fn start(workers: usize) -> TestBroker {
        Self::start_with(workers, |_| {})
    }

    pub fn start_with(workers: usize, f: impl FnOnce(&mut Config)) -> TestBroker {
        let mut cfg = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers,
            pin_workers: false,
            worker_port_base: Some(0),
            max_connections_per_worker: 2048,
            recv_buffers: 256,
            sys_interval_secs: 0,
            ..Config::default()
        };
        f(&mut cfg);
        let handle = ringmq::broker::start(cfg).expect("broker starts");
        let addr = handle.local_addrs()[0];
        let worker_addrs = handle.worker_addrs().to_vec();
        TestBroker {
            handle: Some(handle),
            addr,
            worker_addrs,
        }
    }

    pub fn metric(&self, name: &str) -> u64 {
        self.handle
            .as_ref()
            .unwrap()
            .metrics()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
            h.join();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking raw MQTT client.
pub struct Raw {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl Raw {
    pub fn connect_tcp(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// Wrap a stream connected by other means (e.g. with socket options set first).
    pub fn from_stream(stream: TcpStream, version: ProtocolVersion) -> Raw {
        Raw {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    pub fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode_packet(p, self.version, &mut out);
        self.stream.write_all(&out).expect("write");
    }

    pub fn send_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(b)
    }

    /// Next packet, or None on EOF/reset or timeout.
    pub fn recv(&mut self, timeout: Duration) -> Option<Packet> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some((p, n))) = decode_packet(&self.buf, Some(self.version), u32::MAX) {
                let _ = self.buf.split_to(n);
                return Some(p);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Next packet, or why none came: "eof", "timeout" or the I/O error.
    pub fn recv_or_end(&mut self, timeout: Duration) -> Result<Packet, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some((p, n))) = decode_packet(&self.buf, Some(self.version), u32::MAX) {
                let _ = self.buf.split_to(n);
                return Ok(p);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or("timeout")?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return Err("eof".into()),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Err("timeout".into())
                }
                // A stopped and continued process sees EINTR on a read with SO_RCVTIMEO.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("error {e}")),
            }
        }
    }

    /// Wait for the broker to close the connection, skipping packets; returns what was seen
    /// and when the EOF came (None if it did not come within `timeout`).
    pub fn wait_closed(&mut self, timeout: Duration) -> (Vec<Packet>, Option<Instant>) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            if let Ok(Some((p, n))) = decode_packet(&self.buf, Some(self.version), u32::MAX) {
                let _ = self.buf.split_to(n);
                seen.push(p);
                continue;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return (seen, None);
            };
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return (seen, Some(Instant::now())),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return (seen, None)
                }
                Err(_) => return (seen, Some(Instant::now())),
            }
        }
    }
}

pub fn connect_packet(version: ProtocolVersion, id: &str, keep_alive: u16, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive,
        client_id: ByteString::from(id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

pub fn will(topic: &str, payload: &str, delay: Option<u32>) -> Will {
    Will {
        topic: ByteString::from(topic),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..Default::default()
        },
    }
}

/// Connect and expect a successful CONNACK; returns the client and the CONNACK.
pub fn connect(addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
    let mut raw = Raw::connect_tcp(addr, c.protocol);
    raw.send(&Packet::Connect(Box::new(c)));
    match raw.recv(Duration::from_secs(5)) {
        Some(Packet::ConnAck(ack)) => (raw, ack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

pub fn subscribe(raw: &mut Raw, pid: u16, filter: &str, qos: QoS) -> SubAck {
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: pid,
        filters: vec![(
            ByteString::from(filter),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    }));
    loop {
        match raw.recv(Duration::from_secs(5)) {
            Some(Packet::SubAck(s)) => return s,
            Some(_) => continue,
            None => panic!("no SUBACK"),
        }
    }
}

pub fn publish(topic: &str, payload: &str, qos: QoS, pid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: Default::default(),
    })
}

/// Wait for a PUBLISH (acking QoS 1/2 as a client would), skipping other packets.
pub fn recv_publish(raw: &mut Raw, timeout: Duration) -> Option<Publish> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match raw.recv(left)? {
            Packet::Publish(p) => {
                match p.qos {
                    QoS::AtLeastOnce => raw.send(&Packet::PubAck(PubResp::new(p.packet_id))),
                    QoS::ExactlyOnce => raw.send(&Packet::PubRec(PubResp::new(p.packet_id))),
                    QoS::AtMostOnce => {}
                }
                return Some(p);
            }
            Packet::PubRel(r) => raw.send(&Packet::PubComp(PubResp::new(r.packet_id))),
            _ => {}
        }
    }
}

/// Whether `mosquitto_pub` and `mosquitto_sub` (Debian's mosquitto-clients) can be run; the
/// interop tests skip, saying so, when they cannot.
pub fn have_mosquitto() -> bool {
    let ok = ["mosquitto_sub", "mosquitto_pub"]
        .iter()
        .all(|b| std::process::Command::new(b).arg("--help").output().is_ok());
    if !ok {
        eprintln!(
            "SKIP: mosquitto_pub/mosquitto_sub not installed (apt-get install mosquitto-clients)"
        );
    }
    ok
}

/// A loopback port free now (for a program that must be told its port, such as etcd).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new empty directory for one test (unique across this process's tests).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "ringmq-test-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
