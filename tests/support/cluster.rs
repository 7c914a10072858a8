//! The cluster harness: a real etcd (Debian's `etcd-server`) on loopback with a temporary
//! data dir and ports of its own, ringmq node processes registered in it, and the client steps
//! the cluster tests share.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{connect_packet, free_port, recv_publish, temp_dir, Raw};
use ringmq::protocol::*;

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sends a signal to a child process of ours.
    unsafe { libc::kill(pid as i32, sig) };
}

/// etcd on loopback: ports of its own, a temporary data dir.
pub struct Etcd {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    /// Addresses etcd also listens on for clients (same port), e.g. the host end of a veth
    /// pair for nodes in another network namespace.
    pub also_on: Vec<IpAddr>,
}

impl Etcd {
    /// None (the test skips, saying so) when etcd is not installed, outside CI.
    pub fn start() -> Option<Etcd> {
        Self::start_also_on(&[])
    }

    /// As `start`, listening for clients on `ips` too (see `url_on`).
    pub fn start_also_on(ips: &[IpAddr]) -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "etcd is not installed (apt-get install etcd-server); CI installs it"
            );
            eprintln!("SKIP: etcd not installed (apt-get install etcd-server)");
            return None;
        }
        let mut e = Etcd {
            child: None,
            dir: temp_dir("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            also_on: ips.to_vec(),
        };
        e.spawn();
        Some(e)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client URL on one of the `also_on` addresses.
    pub fn url_on(&self, ip: IpAddr) -> String {
        format!("http://{}", SocketAddr::new(ip, self.client_port))
    }

    pub fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.with_extension("log")).unwrap();
        let mut listen = vec![self.url()];
        listen.extend(self.also_on.iter().map(|&ip| self.url_on(ip)));
        let child = Command::new("etcd")
            .arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(listen.join(","))
            .arg("--advertise-client-urls")
            .arg(self.url())
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("t={peer}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A ringmq node process.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Node {
    /// A node on loopback (2 workers) registered in `etcd`.
    pub fn start(etcd: &Etcd, name: &str, lease: u64) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
        cmd.args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
            .args(Node::cluster_args(&etcd.url(), name, lease));
        Node::launch(name, cmd)
    }

    /// The flags every test node has: 2 workers, the etcd, its name and lease. `--listen` and
    /// `--cluster-listen` are the caller's.
    pub fn cluster_args(etcd_url: &str, name: &str, lease: u64) -> Vec<String> {
        [
            "--workers",
            "2",
            "--no-pin",
            "--cluster-etcd",
            etcd_url,
            "--node-name",
            name,
            "--cluster-lease-secs",
            &lease.to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// Run `cmd` (a ringmq command line, possibly behind a wrapper such as `ip netns exec`),
    /// its log in a temporary file, and wait until it listens and is registered in etcd.
    // The child is waited for by `Node`'s Drop (and killed there).
    #[allow(clippy::zombie_processes)]
    pub fn launch(name: &str, mut cmd: Command) -> Node {
        let log = temp_dir(name).with_extension("log");
        let child = cmd
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("ringmq runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = text
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|a| a.trim().split(' ').next())
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if let (Some(addr), true) = (addr, text.contains("registered in etcd")) {
                return Node { child, addr, log };
            }
            assert!(
                Instant::now() < deadline,
                "node {name} did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until this node's links to `n` peers are up.
    pub fn wait_linked(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.log_text();
            let peers: HashSet<&str> = text
                .lines()
                .filter(|l| l.contains("peer link up"))
                .filter_map(|l| l.split("peer=").nth(1))
                .filter_map(|s| s.split_whitespace().next())
                .collect();
            if peers.len() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "links did not come up:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cluster(n: usize, lease: u64) -> Option<(Etcd, Vec<Node>)> {
    let etcd = Etcd::start()?;
    let nodes: Vec<Node> = (0..n)
        .map(|i| Node::start(&etcd, &format!("n{}", i + 1), lease))
        .collect();
    for node in &nodes {
        node.wait_linked(n - 1);
    }
    Some((etcd, nodes))
}

pub fn v5(id: &str, clean: bool, expiry: u32) -> Connect {
    let mut c = connect_packet(ProtocolVersion::V5, id, 60, clean);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

/// Connect; the CONNACK whatever its code.
pub fn try_connect(addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
    let mut raw = Raw::connect_tcp(addr, c.protocol);
    raw.send(&Packet::Connect(Box::new(c)));
    loop {
        match raw.recv(Duration::from_secs(15)) {
            Some(Packet::ConnAck(ack)) => return (raw, ack),
            Some(_) => continue,
            None => panic!("no CONNACK"),
        }
    }
}

pub fn connect_ok(addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
    let (raw, ack) = try_connect(addr, c);
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{ack:?}");
    (raw, ack)
}

/// Publish and wait for the whole acknowledgement flow of its QoS.
pub fn publish_acked(raw: &mut Raw, topic: &str, payload: &str, qos: QoS, pid: u16, retain: bool) {
    let mut p = super::publish(topic, payload, qos, pid);
    if let Packet::Publish(pp) = &mut p {
        pp.retain = retain;
    }
    raw.send(&p);
    if qos == QoS::AtMostOnce {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.recv(left) {
            Some(Packet::PubAck(a)) if a.packet_id == pid => return,
            Some(Packet::PubRec(r)) if r.packet_id == pid => {
                raw.send(&Packet::PubRel(PubResp::new(pid)))
            }
            Some(Packet::PubComp(c)) if c.packet_id == pid => return,
            Some(_) => {}
            None => panic!("no acknowledgement for {topic} {pid}"),
        }
    }
}

/// Publish QoS 0 probes on `from` until `sub` receives one: the subscription is known
/// cluster-wide from then on (filters travel asynchronously).
pub fn await_route(from: &mut Raw, sub: &mut Raw, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        from.send(&super::publish(topic, "probe", QoS::AtMostOnce, 0));
        if let Some(p) = recv_publish(sub, Duration::from_millis(200)) {
            if &p.payload[..] == b"probe" {
                // Drain other probes still on their way.
                while recv_publish(sub, Duration::from_millis(300)).is_some() {}
                return;
            }
        }
        assert!(Instant::now() < deadline, "no route to {topic}");
    }
}

/// Whether the connection is alive: a PINGREQ gets its PINGRESP.
pub fn alive(raw: &mut Raw) -> bool {
    raw.send(&Packet::PingReq);
    loop {
        match raw.recv_or_end(Duration::from_secs(5)) {
            Ok(Packet::PingResp) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}
