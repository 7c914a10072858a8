//! A cut peer link (issue 16, the peer-link fault): two ringmq nodes on a real etcd whose
//! node-to-node TCP link is black-holed while etcd and the MQTT clients stay reachable. QoS 1
//! messages published across the link during the cut must all be delivered once it heals,
//! none lost and none twice (the link numbers its frames, keeps them until the peer's
//! cumulative `Ack`, sends them again after a reconnect, and the receiver drops the numbers it
//! has handled: `src/cluster/node.rs`, `link` and `read_link`).
//!
//! Topology (addresses only on the veth pairs made here, so nothing leaves the machine):
//!
//! ```text
//!  root namespace                                        namespace rmqcl-PID-N
//!  etcd  127.0.0.1:P + 10.200.A.1:P                       n2 MQTT       10.200.A.2:0
//!  n1    MQTT 127.0.0.1:0                                    etcd client -> 10.200.A.1:P
//!        peer link 10.200.B.1:0                              peer link    10.200.B.2:0
//!  test clients (root ns) --- pair A: etcd + MQTT --- 10.200.A.2
//!  n1 peer link 10.200.B.1 --- pair B: only the peer links --- 10.200.B.2
//! ```
//!
//! Both peer-link connections (n1 -> n2 and n2 -> n1) use pair B, because each node announces
//! its bound `--cluster-listen` address, which is on pair B (checked in etcd). The cut sets
//! pair B's namespace end down inside the namespace, as `tests/halfopen.rs` makes its black
//! hole: no data, FIN or RST passes either way; etcd and the clients (pair A) are untouched.
//! The blocks are /30s in 10.200.240.0/20 (halfopen.rs spreads over all of 10.200.0.0/16 and
//! skips blocks in use, as this file does).
//!
//! Without root (or without iproute2) the tests print "skipped: cannot create network
//! namespaces: ..." and pass, unless RINGMQ_REQUIRE_NETNS=1 (set by `.ci/run`); without etcd
//! they skip as `tests/cluster.rs` does.

#![cfg(feature = "cluster")]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringmq::protocol::*;
use support::cluster::*;
use support::netns::ip;
use support::{recv_publish, subscribe};

/// How long the link stays cut: longer than the peer link's liveness timeout (4 s without a
/// word from the peer: the link is closed, logged "peer link down", and connected again).
const CUT: Duration = Duration::from_secs(8);
/// After the heal, every message must have arrived within this.
const HEAL_WAIT: Duration = Duration::from_secs(20);
/// After the last expected message, nothing more may arrive within this.
const QUIET: Duration = Duration::from_secs(1);
const MESSAGES: u16 = 50;
/// Long enough that the cut fences no one: the peer link is tested here, not the lease.
const LEASE: u64 = 20;

// ---------------------------------------------------------------------------------------------
// A network namespace with two veth pairs to the root namespace, removed on drop
// ---------------------------------------------------------------------------------------------

const NS_PREFIX: &str = "rmqcl-";
static NEXT_NET: AtomicU32 = AtomicU32::new(0);
/// Held while a namespace picks its free blocks and puts addresses on them (tests of this
/// file run in parallel threads).
static PICK: Mutex<()> = Mutex::new(());

/// One veth pair: `host_dev` in the root namespace, `ns_dev` in the namespace.
struct Pair {
    host_dev: String,
    ns_dev: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    /// Its 10.200.x.y/30, guarded by a blackhole route (see `Net::create`); empty until set.
    block: String,
}

/// The namespace of node n2: pair `a` carries etcd and the MQTT clients, pair `b` only the
/// peer links.
struct Net {
    ns: String,
    a: Pair,
    b: Pair,
}

impl Net {
    /// Remove namespaces (and their host ends and routes) left behind by test processes that
    /// were killed before their guard ran.
    fn remove_stale() {
        support::netns::remove_stale(NS_PREFIX, |pid, n| {
            ["a", "b"].map(|p| format!("rc{pid}n{n}{p}h")).to_vec()
        });
    }

    fn create() -> Result<Net, String> {
        let pid = std::process::id();
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let ns = format!("{NS_PREFIX}{pid}-{n}");
        let pair = |p: &str| Pair {
            host_dev: format!("rc{pid}n{n}{p}h"),
            ns_dev: format!("rc{pid}n{n}{p}n"),
            host_ip: Ipv4Addr::UNSPECIFIED,
            ns_ip: Ipv4Addr::UNSPECIFIED,
            block: String::new(),
        };
        ip(&["netns", "add", &ns])?;
        // From here on the guard cleans up whatever was made.
        let mut net = Net {
            ns,
            a: pair("a"),
            b: pair("b"),
        };
        if n == 0 {
            Self::remove_stale();
        }
        net.in_ns(&["link", "set", "lo", "up"])?;
        let _pick = PICK.lock().unwrap_or_else(|e| e.into_inner());
        let used = ip(&["-o", "-4", "addr", "show"])? + &ip(&["-4", "route", "show"])?;
        // /30 blocks 0..1024 of 10.200.240.0/20, from a place of this process's own.
        let start = (pid % 64) * 16 + n * 2;
        let mut free = (0..1024u32).map(|i| (start + i) % 1024).filter(|b| {
            let (x, y) = (240 + b / 64, (b % 64) * 4);
            let base = format!("10.200.{x}.{y}/");
            let (h, c) = (
                format!("10.200.{x}.{}/", y + 1),
                format!("10.200.{x}.{}/", y + 2),
            );
            !used.contains(&base) && !used.contains(&h) && !used.contains(&c)
        });
        let blocks = [free.next(), free.next()];
        for (pair, block) in [&mut net.a, &mut net.b].into_iter().zip(blocks) {
            let b = block.ok_or("no free /30 in 10.200.240.0/20")?;
            let (x, y) = ((240 + b / 64) as u8, ((b % 64) * 4) as u8);
            pair.host_ip = Ipv4Addr::new(10, 200, x, y + 1);
            pair.ns_ip = Ipv4Addr::new(10, 200, x, y + 2);
            ip(&[
                "link",
                "add",
                &pair.host_dev,
                "type",
                "veth",
                "peer",
                "name",
                &pair.ns_dev,
                "netns",
                &net.ns,
            ])?;
            // Safety net as in halfopen.rs: should the connected route be ignored while the
            // link is down (ignore_routes_with_linkdown), packets for the block are dropped
            // here rather than sent to the default route.
            let block = format!("10.200.{x}.{y}/30");
            ip(&["route", "replace", "blackhole", &block, "metric", "4000"])?;
            pair.block = block;
            let host = format!("{}/30", pair.host_ip);
            ip(&["addr", "add", &host, "dev", &pair.host_dev])?;
            ip(&["link", "set", &pair.host_dev, "up"])?;
            let inside = format!("{}/30", pair.ns_ip);
            let (ns_dev, ns) = (pair.ns_dev.clone(), net.ns.clone());
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            in_ns(&["addr", "add", &inside, "dev", &ns_dev])?;
            in_ns(&["link", "set", &ns_dev, "up"])?;
        }
        Ok(net)
    }

    fn in_ns(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.ns, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Black-hole the peer links: pair B's namespace end goes down inside the namespace.
    fn cut(&self) {
        self.in_ns(&["link", "set", &self.b.ns_dev, "down"])
            .expect("set the peer-link end down");
    }

    /// Set it up again. The addresses stay while a link is down and the kernel puts the
    /// connected routes back when it comes up; checked here rather than assumed.
    fn heal(&self) {
        self.in_ns(&["link", "set", &self.b.ns_dev, "up"])
            .expect("set the peer-link end up");
        let routes = self.in_ns(&["-4", "route", "show"]).unwrap_or_default();
        let addrs = self
            .in_ns(&["-o", "-4", "addr", "show", "dev", &self.b.ns_dev])
            .unwrap_or_default();
        assert!(
            routes.contains(&self.b.block) && addrs.contains(&format!("{}/30", self.b.ns_ip)),
            "pair B's address or route did not come back after the heal:\n{addrs}\n{routes}"
        );
    }

    /// A ringmq command line run inside the namespace.
    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_ringmq")])
            .args(args);
        cmd
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The processes inside are gone by now (declared after the guard, so dropped first).
        let pairs = [&self.a, &self.b].map(|p| (p.host_dev.as_str(), p.block.as_str()));
        support::netns::remove(&self.ns, &pairs);
    }
}

/// A namespace, or skip the test (return) with the message halfopen.rs gives.
macro_rules! net_or_skip {
    () => {
        match Net::create() {
            Ok(n) => n,
            Err(e) => {
                support::netns::cannot_create(&e);
                return;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// etcd's members, read over its JSON gateway
// ---------------------------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(data: &[u8]) -> String {
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    let (mut out, mut n, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&b| b == c).expect("base64") as u32;
        n = n << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((n >> bits) as u8);
            n &= (1 << bits) - 1;
        }
    }
    out
}

/// The member keys in etcd: node name -> (announced peer-link address, lease id).
fn members(etcd: &Etcd) -> BTreeMap<String, (String, String)> {
    let prefix = "/ringmq/members/";
    let body = serde_json::json!({
        "key": b64(prefix.as_bytes()),
        "range_end": b64(b"/ringmq/members0"),
    })
    .to_string();
    let mut s = TcpStream::connect(("127.0.0.1", etcd.client_port)).expect("etcd gateway");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // HTTP/1.0: the whole body, then the close (no chunks).
    write!(
        s,
        "POST /v3/kv/range HTTP/1.0\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("etcd gateway answer");
    let json = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("etcd answered {resp:?}: {e}"));
    let mut out = BTreeMap::new();
    for kv in v["kvs"].as_array().into_iter().flatten() {
        let key = String::from_utf8(unb64(kv["key"].as_str().unwrap_or(""))).unwrap();
        let value = String::from_utf8(unb64(kv["value"].as_str().unwrap_or(""))).unwrap();
        let lease = kv["lease"].as_str().unwrap_or("none").to_string();
        out.insert(key.trim_start_matches(prefix).to_string(), (value, lease));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// Log lines of `node` containing `what` and `peer=PEER`.
fn log_count(node: &Node, what: &str, peer: &str) -> usize {
    let peer = format!("peer={peer}");
    node.log_text()
        .lines()
        .filter(|l| l.contains(what) && l.split_whitespace().any(|w| w == peer))
        .count()
}

/// Which way the messages cross the cut link.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// Publisher on n1 (root namespace), subscriber on n2: n1's outgoing link carries them.
    N1ToN2,
    /// Publisher on n2, subscriber on n1: n2's outgoing link carries them.
    N2ToN1,
}

fn qos1_across_a_cut_peer_link(way: Way) {
    let t0 = Instant::now();
    // Declared first, dropped last: the processes below are gone before their namespace.
    let net = net_or_skip!();
    let Some(etcd) = Etcd::start_also_on(&[IpAddr::V4(net.a.host_ip)]) else {
        return;
    };
    let n1_link = SocketAddr::new(net.b.host_ip.into(), 0).to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    cmd.args(["--listen", "127.0.0.1:0", "--cluster-listen", &n1_link])
        .args(Node::cluster_args(&etcd.url(), "n1", LEASE));
    let mut n1 = Node::launch("n1", cmd);
    let mut args: Vec<String> = [
        "--listen".to_string(),
        SocketAddr::new(net.a.ns_ip.into(), 0).to_string(),
        "--cluster-listen".to_string(),
        SocketAddr::new(net.b.ns_ip.into(), 0).to_string(),
    ]
    .to_vec();
    args.extend(Node::cluster_args(
        &etcd.url_on(net.a.host_ip.into()),
        "n2",
        LEASE,
    ));
    let mut n2 = Node::launch("n2", net.command(&args));
    n1.wait_linked(1);
    n2.wait_linked(1);

    // Each node announced its address on pair B, so both peer links run over pair B.
    let before = members(&etcd);
    let announced = |name: &str| -> SocketAddr {
        let (addr, _) = before
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in etcd: {before:?}"));
        addr.parse()
            .unwrap_or_else(|e| panic!("{name} announced {addr:?}: {e}"))
    };
    assert_eq!(
        announced("n1").ip(),
        IpAddr::V4(net.b.host_ip),
        "{before:?}"
    );
    assert_eq!(announced("n2").ip(), IpAddr::V4(net.b.ns_ip), "{before:?}");
    assert!(
        n2.addr.ip() == IpAddr::V4(net.a.ns_ip),
        "n2's MQTT on pair A: {}",
        n2.addr
    );

    let (pub_node, sub_node, tag) = match way {
        Way::N1ToN2 => (&n1, &n2, "n1-n2"),
        Way::N2ToN1 => (&n2, &n1, "n2-n1"),
    };
    let (pub_name, sub_name) = match way {
        Way::N1ToN2 => ("n1", "n2"),
        Way::N2ToN1 => ("n2", "n1"),
    };
    let (mut sub, _) = connect_ok(sub_node.addr, v5(&format!("sub-{tag}"), true, 0));
    let filter = format!("cl/{tag}/#");
    assert_eq!(
        subscribe(&mut sub, 1, &filter, QoS::AtLeastOnce).reasons[0],
        ReasonCode::GRANTED_QOS_1
    );
    let (mut publ, _) = connect_ok(pub_node.addr, v5(&format!("pub-{tag}"), true, 0));
    await_route(&mut publ, &mut sub, &format!("cl/{tag}/probe"));
    // One QoS 1 message across the healthy link.
    let topic = format!("cl/{tag}/m");
    publish_acked(&mut publ, &topic, "before", QoS::AtLeastOnce, 1, false);
    let p = recv_publish(&mut sub, Duration::from_secs(5)).expect("delivery before the cut");
    assert_eq!(&p.payload[..], b"before");
    let ups_before = log_count(pub_node, "peer link up", sub_name);
    let ready = t0.elapsed();

    // The cut: every message is accepted (PUBACK) by the publisher's node, none crosses.
    net.cut();
    let cut_at = Instant::now();
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("{tag} #{i}")).collect();
    for (i, payload) in sent.iter().enumerate() {
        publish_acked(
            &mut publ,
            &topic,
            payload,
            QoS::AtLeastOnce,
            i as u16 + 2,
            false,
        );
    }
    let published_in = cut_at.elapsed();
    let mut during = Vec::new();
    while let Some(left) = CUT.checked_sub(cut_at.elapsed()) {
        match recv_publish(&mut sub, left) {
            Some(p) => during.push(String::from_utf8_lossy(&p.payload).into_owned()),
            None => break,
        }
    }
    assert!(
        during.is_empty(),
        "messages crossed the cut link (is the peer link on pair B?): {during:?}"
    );
    assert!(
        log_count(pub_node, "peer link down", sub_name) >= 1,
        "{pub_name} did not declare its link to {sub_name} down within {CUT:?}:\n{}",
        pub_node.log_text()
    );

    // The heal: every message once, at QoS 1, within HEAL_WAIT; then nothing more.
    net.heal();
    let healed = Instant::now();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let mut received = 0;
    let mut last_at = None;
    let deadline = healed + HEAL_WAIT;
    while received < sent.len() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let Some(p) = recv_publish(&mut sub, left) else {
            break;
        };
        let payload = String::from_utf8_lossy(&p.payload).into_owned();
        assert_eq!(p.qos, QoS::AtLeastOnce, "{payload} at {:?}", p.qos);
        *got.entry(payload).or_default() += 1;
        received += 1;
        last_at = Some(healed.elapsed());
    }
    let all_in = healed.elapsed();
    while let Some(p) = recv_publish(&mut sub, QUIET) {
        *got.entry(String::from_utf8_lossy(&p.payload).into_owned())
            .or_default() += 1;
    }
    let missing: Vec<&String> = sent.iter().filter(|s| !got.contains_key(*s)).collect();
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, &n)| n > 1).collect();
    let unknown: Vec<&String> = got.keys().filter(|k| !sent.contains(k)).collect();
    eprintln!(
        "{tag}: ready after {ready:?}; {MESSAGES} QoS 1 published (PUBACKed) in \
         {published_in:?} into a cut of {CUT:?}; after the heal {received} received, the last \
         at {last_at:?}; missing {}, twice {}, unknown {}",
        missing.len(),
        twice.len(),
        unknown.len()
    );
    assert!(
        missing.is_empty() && twice.is_empty() && unknown.is_empty(),
        "{tag}: within {HEAL_WAIT:?} of the heal (+{QUIET:?}) every message once: \
         missing {missing:?}, more than once {twice:?}, not sent {unknown:?} \
         (all received by {all_in:?})\n--- {pub_name} log:\n{}",
        pub_node.log_text()
    );
    assert!(
        log_count(pub_node, "peer link up", sub_name) > ups_before,
        "{pub_name}'s link to {sub_name} was not connected again after the heal:\n{}",
        pub_node.log_text()
    );

    // Nobody fenced, nobody died, the registrations are the ones from before the cut.
    for (name, node) in [("n1", &mut n1), ("n2", &mut n2)] {
        assert!(
            node.child.try_wait().expect("wait").is_none(),
            "{name} exited:\n{}",
            node.log_text()
        );
        let text = node.log_text();
        assert!(!text.contains("lease lost"), "{name} was fenced:\n{text}");
        assert_eq!(
            text.matches("registered in etcd").count(),
            1,
            "{name} registered again:\n{text}"
        );
    }
    assert_eq!(
        members(&etcd),
        before,
        "the member keys and their leases are unchanged"
    );
    assert!(
        alive(&mut sub) && alive(&mut publ),
        "the clients are still connected"
    );
    // The healed link carries new messages at once.
    publish_acked(&mut publ, &topic, "after", QoS::AtLeastOnce, 99, false);
    let p = recv_publish(&mut sub, Duration::from_secs(5)).expect("delivery after the heal");
    assert_eq!(&p.payload[..], b"after");
    eprintln!("{tag}: whole test {:?}", t0.elapsed());
}

#[test]
fn qos1_published_on_n1_across_a_cut_peer_link_arrives_once_on_n2_after_the_heal() {
    qos1_across_a_cut_peer_link(Way::N1ToN2);
}

#[test]
fn qos1_published_on_n2_across_a_cut_peer_link_arrives_once_on_n1_after_the_heal() {
    qos1_across_a_cut_peer_link(Way::N2ToN1);
}
