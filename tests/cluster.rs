//! A ringmq cluster on a real etcd (Debian's `etcd-server`, started here on loopback with a
//! temporary data dir and ports of its own): three broker processes, the raw client of
//! `support` (exact control of CONNECT flags, packet ids and the QoS 2 flow) and
//! mosquitto_sub. Cross-node delivery at QoS 0/1/2, retained messages, take-over across
//! nodes with the session moving, racing CONNECTs, and the faults: SIGKILL of a node, SIGSTOP
//! past its lease (fencing), etcd stopped.

#![cfg(feature = "cluster")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringmq::protocol::*;
use support::cluster::*;
use support::{connect_packet, recv_publish, subscribe, Raw};

#[test]
fn cross_node_delivery_at_every_qos_and_retained() {
    let Some((_etcd, nodes)) = cluster(3, 5) else {
        return;
    };
    let (mut sub, _) = connect_ok(nodes[1].addr, v5("sub-n2", true, 0));
    assert_eq!(
        subscribe(&mut sub, 1, "t/#", QoS::ExactlyOnce).reasons[0],
        ReasonCode::GRANTED_QOS_2
    );
    let (mut p1, _) = connect_ok(nodes[0].addr, v5("pub-n1", true, 0));
    let (mut p3, _) = connect_ok(nodes[2].addr, v5("pub-n3", true, 0));
    await_route(&mut p1, &mut sub, "t/probe");
    await_route(&mut p3, &mut sub, "t/probe");
    let mut sent = Vec::new();
    for i in 0..30u16 {
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i as usize % 3];
        let (p, name) = if i % 2 == 0 {
            (&mut p1, "n1")
        } else {
            (&mut p3, "n3")
        };
        let payload = format!("{name}-{i}-{qos:?}");
        publish_acked(p, &format!("t/{i}"), &payload, qos, i + 1, false);
        sent.push((payload, qos));
    }
    let mut got = Vec::new();
    while let Some(p) = recv_publish(&mut sub, Duration::from_secs(3)) {
        got.push((String::from_utf8_lossy(&p.payload).to_string(), p.qos));
        if got.len() == sent.len() {
            // Anything more would be a duplicate.
            if let Some(p) = recv_publish(&mut sub, Duration::from_millis(500)) {
                panic!("duplicate: {p:?}");
            }
            break;
        }
    }
    let mut a: Vec<_> = sent.iter().map(|(p, q)| format!("{p} {q:?}")).collect();
    let mut b: Vec<_> = got.iter().map(|(p, q)| format!("{p} {q:?}")).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "every message once, at its QoS");

    // Retained on n1, seen by a subscriber on n3 that subscribes afterwards.
    publish_acked(&mut p1, "r/x", "kept", QoS::AtLeastOnce, 100, true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (mut s3, _) = connect_ok(nodes[2].addr, v5("ret-n3", true, 0));
        subscribe(&mut s3, 1, "r/#", QoS::AtLeastOnce);
        if let Some(p) = recv_publish(&mut s3, Duration::from_millis(500)) {
            assert_eq!(&p.payload[..], b"kept");
            assert!(p.retain);
            break;
        }
        assert!(Instant::now() < deadline, "retained message not on n3");
    }
    // A node that joins later gets the retained store when its links come up.
    let n4 = Node::start(&_etcd, "n4", 5);
    n4.wait_linked(3);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (mut s4, _) = connect_ok(n4.addr, v5("ret-n4", true, 0));
        subscribe(&mut s4, 1, "r/#", QoS::AtLeastOnce);
        if let Some(p) = recv_publish(&mut s4, Duration::from_millis(500)) {
            assert_eq!(&p.payload[..], b"kept");
            break;
        }
        assert!(Instant::now() < deadline, "retained message not on n4");
    }
}

#[test]
fn takeover_across_nodes_moves_the_session() {
    let Some((_etcd, nodes)) = cluster(3, 5) else {
        return;
    };
    // A will watcher on n3.
    let (mut watcher, _) = connect_ok(nodes[2].addr, v5("watcher", true, 0));
    subscribe(&mut watcher, 1, "will/#", QoS::AtLeastOnce);

    // The first connection, on n1: persistent session, a subscription, a will (delay 0).
    let mut c = v5("dev-1", true, 300);
    c.will = Some(support::will("will/dev-1", "gone", None));
    let (mut old, ack) = connect_ok(nodes[0].addr, c);
    assert!(!ack.session_present);
    subscribe(&mut old, 1, "cmd/dev-1", QoS::AtLeastOnce);
    let (mut p3, _) = connect_ok(nodes[2].addr, v5("pub-3", true, 0));
    await_route(&mut p3, &mut old, "cmd/dev-1");
    let (mut w1, _) = connect_ok(nodes[0].addr, v5("pub-w", true, 0));
    await_route(&mut w1, &mut watcher, "will/probe");

    // The same id on n2, continuing the session.
    let (mut new, ack) = connect_ok(nodes[1].addr, v5("dev-1", false, 300));
    assert!(ack.session_present, "the session came from n1");
    // The old connection: DISCONNECT 0x8E, then closed.
    let (seen, closed) = old.wait_closed(Duration::from_secs(10));
    assert!(closed.is_some(), "old connection still open");
    assert!(
        seen.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::SESSION_TAKEN_OVER)
        ),
        "no DISCONNECT 0x8E: {seen:?}"
    );
    // The will (delay 0) went when the old connection was taken over.
    let w = recv_publish(&mut watcher, Duration::from_secs(10)).expect("the will");
    assert_eq!(&w.payload[..], b"gone");
    // The subscription moved with the session: a publish on n3 reaches n2.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    loop {
        i += 1;
        publish_acked(
            &mut p3,
            "cmd/dev-1",
            &format!("m{i}"),
            QoS::AtLeastOnce,
            i,
            false,
        );
        if recv_publish(&mut new, Duration::from_millis(300)).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the moved subscription gets nothing"
        );
    }

    // A clean start on n3 ends it: Session Present 0, the n2 connection is taken over.
    let (_c3, ack) = connect_ok(nodes[2].addr, v5("dev-1", true, 0));
    assert!(!ack.session_present);
    let (seen, closed) = new.wait_closed(Duration::from_secs(10));
    assert!(closed.is_some());
    assert!(seen
        .iter()
        .any(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::SESSION_TAKEN_OVER)));
}

#[test]
fn racing_connects_on_different_nodes_leave_one_owner() {
    let Some((_etcd, nodes)) = cluster(3, 5) else {
        return;
    };
    for round in 0..8 {
        let id = format!("race-{round}");
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let handles: Vec<_> = addrs
            .into_iter()
            .map(|a| {
                let id = id.clone();
                std::thread::spawn(move || try_connect(a, v5(&id, false, 60)))
            })
            .collect();
        let mut conns: Vec<Raw> = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|(_, ack)| ack.code == ReasonCode::SUCCESS)
            .map(|(r, _)| r)
            .collect();
        // Let the take-overs settle, then count the live ones.
        std::thread::sleep(Duration::from_millis(500));
        let live = conns.iter_mut().map(alive).filter(|&a| a).count();
        assert_eq!(live, 1, "round {round}: {live} live owners of {id}");
    }
}

#[test]
fn sigkill_of_a_node_its_clients_take_over_elsewhere() {
    let lease = 3;
    let Some((_etcd, mut nodes)) = cluster(3, lease) else {
        return;
    };
    let (_held, _) = connect_ok(nodes[0].addr, v5("k-1", false, 300));
    // Traffic between the other two nodes.
    let (mut sub, _) = connect_ok(nodes[2].addr, v5("k-sub", true, 0));
    subscribe(&mut sub, 1, "k/#", QoS::AtLeastOnce);
    let (mut p2, _) = connect_ok(nodes[1].addr, v5("k-pub", true, 0));
    await_route(&mut p2, &mut sub, "k/probe");

    nodes[0].child.kill().unwrap();
    let _ = nodes[0].child.wait();
    let t0 = Instant::now();
    // n2 and n3 go on.
    publish_acked(&mut p2, "k/a", "still", QoS::AtLeastOnce, 7, false);
    let p = recv_publish(&mut sub, Duration::from_secs(5)).expect("n2 -> n3 goes on");
    assert_eq!(&p.payload[..], b"still");
    // The dead node's client reconnects to n2: accepted once n1's lease is gone (its session
    // died with it: no data dir).
    let (_c, ack) = connect_ok(nodes[1].addr, v5("k-1", false, 300));
    assert!(!ack.session_present);
    assert!(
        t0.elapsed() < Duration::from_secs(lease * 4 + 5),
        "take-over waited {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_node_stopped_past_its_lease_fences_itself() {
    let lease = 3;
    let Some((_etcd, nodes)) = cluster(2, lease) else {
        return;
    };
    let (mut stale, _) = connect_ok(nodes[0].addr, v5("f-1", false, 300));
    signal(nodes[0].pid(), libc::SIGSTOP);
    // The client moves to n2 meanwhile (accepted once n1's lease is gone).
    let (mut fresh, _) = connect_ok(nodes[1].addr, v5("f-1", false, 300));
    std::thread::sleep(Duration::from_secs(1));
    signal(nodes[0].pid(), libc::SIGCONT);
    // n1 wakes up, finds its lease lost, closes what it held.
    let (_, closed) = stale.wait_closed(Duration::from_secs(10));
    assert!(closed.is_some(), "the stale connection on n1 stays open");
    assert!(alive(&mut fresh), "the owner on n2 was disturbed");
    // n1 rejoins: a new CONNECT there is served again (and takes the id over from n2).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_r, ack) = try_connect(nodes[0].addr, v5("f-2", true, 0));
        if ack.code == ReasonCode::SUCCESS {
            break;
        }
        assert_eq!(ack.code, ReasonCode::SERVER_UNAVAILABLE);
        assert!(Instant::now() < deadline, "n1 did not rejoin");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(nodes[0].log_text().contains("lease lost"));
}

#[test]
fn etcd_killed_and_restarted_on_its_data_dir_the_cluster_goes_on() {
    // A lease long enough to outlast etcd's absence: nobody fences.
    let lease = 20;
    let Some((mut etcd, nodes)) = cluster(2, lease) else {
        return;
    };
    let (mut sub, _) = connect_ok(nodes[1].addr, v5("r-sub", true, 0));
    subscribe(&mut sub, 1, "r/#", QoS::AtLeastOnce);
    let (mut publ, _) = connect_ok(nodes[0].addr, v5("r-pub", true, 0));
    await_route(&mut publ, &mut sub, "r/probe");
    // etcd dies (SIGKILL: no clean shutdown).
    let mut child = etcd.child.take().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    // Traffic across the nodes goes on; a CONNECT cannot be claimed.
    publish_acked(&mut publ, "r/1", "during", QoS::AtLeastOnce, 1, false);
    let p = recv_publish(&mut sub, Duration::from_secs(5)).expect("cross-node delivery");
    assert_eq!(&p.payload[..], b"during");
    let (_r, ack) = try_connect(nodes[1].addr, v5("r-new", true, 0));
    assert_eq!(ack.code, ReasonCode::SERVER_UNAVAILABLE);
    // etcd comes back on its data dir and ports: the nodes' clients reconnect, their
    // leases and keys are still there, CONNECTs are claimed again.
    etcd.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_r, ack) = try_connect(nodes[1].addr, v5("r-new", true, 0));
        if ack.code == ReasonCode::SUCCESS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CONNECTs not accepted after etcd restarted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The ids claimed before the restart are still owned: a take-over across nodes works.
    let (mut again, ack) = connect_ok(nodes[0].addr, v5("r-sub", false, 0));
    assert!(!ack.session_present);
    let (seen, closed) = sub.wait_closed(Duration::from_secs(10));
    assert!(closed.is_some(), "the old r-sub on n2 was not taken over");
    assert!(seen
        .iter()
        .any(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::SESSION_TAKEN_OVER)));
    assert!(alive(&mut again) && alive(&mut publ));
    for n in &nodes {
        assert!(!n.log_text().contains("lease lost"), "{}", n.log_text());
    }
}

#[test]
fn etcd_stopped_local_traffic_goes_on_and_connects_are_refused() {
    let lease = 20;
    let Some((etcd, nodes)) = cluster(2, lease) else {
        return;
    };
    let (mut sub, _) = connect_ok(nodes[0].addr, v5("e-sub", true, 0));
    subscribe(&mut sub, 1, "e/#", QoS::AtLeastOnce);
    let (mut publ, _) = connect_ok(nodes[0].addr, v5("e-pub", true, 0));
    signal(etcd.pid(), libc::SIGSTOP);
    // Local traffic goes on.
    publish_acked(&mut publ, "e/1", "local", QoS::AtLeastOnce, 1, false);
    let p = recv_publish(&mut sub, Duration::from_secs(5)).expect("local delivery");
    assert_eq!(&p.payload[..], b"local");
    // A CONNECT cannot be claimed: refused with 0x88 Server unavailable (MQTT 5).
    let (_r, ack) = try_connect(nodes[1].addr, v5("e-new", true, 0));
    assert_eq!(ack.code, ReasonCode::SERVER_UNAVAILABLE);
    // 3.1.1: return code 3 (server unavailable).
    let (_r, ack) = try_connect(
        nodes[1].addr,
        connect_packet(ProtocolVersion::V311, "e-old", 60, true),
    );
    assert_eq!(ack.code, ReasonCode::SERVER_UNAVAILABLE);
    signal(etcd.pid(), libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_r, ack) = try_connect(nodes[1].addr, v5("e-new", true, 0));
        if ack.code == ReasonCode::SUCCESS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CONNECTs not accepted after etcd came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(alive(&mut sub) && alive(&mut publ));
}

/// Messages of `pfx` (probes skipped) that arrive on `raws` within `quiet` of each other.
fn collect(raws: &mut [&mut Raw], pfx: &str, want: usize) -> Vec<Vec<String>> {
    let mut got: Vec<Vec<String>> = vec![Vec::new(); raws.len()];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut any = false;
        for (i, r) in raws.iter_mut().enumerate() {
            while let Some(p) = recv_publish(r, Duration::from_millis(50)) {
                let s = String::from_utf8_lossy(&p.payload).to_string();
                if s.starts_with(pfx) {
                    assert_eq!(p.qos, QoS::AtLeastOnce, "{s}");
                    got[i].push(s);
                    any = true;
                }
            }
        }
        let n: usize = got.iter().map(Vec::len).sum();
        if n >= want && !any {
            return got;
        }
        assert!(Instant::now() < deadline, "only {n} of {want} arrived");
    }
}

#[test]
fn shared_subscriptions_pick_one_member_cluster_wide() {
    let Some((_etcd, nodes)) = cluster(3, 5) else {
        return;
    };
    let group = "$share/g/sh/#";
    let (mut m2, _) = connect_ok(nodes[1].addr, v5("sh-m2", true, 0));
    let (mut m3, _) = connect_ok(nodes[2].addr, v5("sh-m3", true, 0));
    for m in [&mut m2, &mut m3] {
        assert_eq!(
            subscribe(m, 1, group, QoS::AtLeastOnce).reasons[0],
            ReasonCode::GRANTED_QOS_1
        );
    }
    // The publisher's node has no member: until both groups are known on n1, probes go
    // nowhere or to one of them.
    let (mut p1, _) = connect_ok(nodes[0].addr, v5("sh-pub", true, 0));
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut seen2, mut seen3) = (false, false);
    while !(seen2 && seen3) {
        p1.send(&support::publish("sh/probe", "probe", QoS::AtMostOnce, 0));
        seen2 |= recv_publish(&mut m2, Duration::from_millis(100)).is_some();
        seen3 |= recv_publish(&mut m3, Duration::from_millis(100)).is_some();
        assert!(Instant::now() < deadline, "the group is not known on n1");
    }
    while recv_publish(&mut m2, Duration::from_millis(300)).is_some()
        || recv_publish(&mut m3, Duration::from_millis(300)).is_some()
    {}

    // Each message to exactly one member, and both members get their turns.
    for i in 0..40u16 {
        publish_acked(
            &mut p1,
            &format!("sh/{i}"),
            &format!("a-{i}"),
            QoS::AtLeastOnce,
            i + 1,
            false,
        );
    }
    let got = collect(&mut [&mut m2, &mut m3], "a-", 40);
    let mut all: Vec<&String> = got.iter().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "every message once to the group: {got:?}");
    assert_eq!(got[0].len() + got[1].len(), 40, "no message twice: {got:?}");
    assert!(
        !got[0].is_empty() && !got[1].is_empty(),
        "one member got everything: {} on n2, {} on n3",
        got[0].len(),
        got[1].len()
    );

    // A member on the publisher's node too, and a plain subscriber on n2 beside the group's
    // member there: the group still gets each message once, the plain subscriber every one.
    let (mut m1, _) = connect_ok(nodes[0].addr, v5("sh-m1", true, 0));
    subscribe(&mut m1, 1, group, QoS::AtLeastOnce);
    let (mut plain, _) = connect_ok(nodes[1].addr, v5("sh-plain", true, 0));
    subscribe(&mut plain, 1, "sh/#", QoS::AtLeastOnce);
    await_route(&mut p1, &mut plain, "sh/probe");
    while recv_publish(&mut m1, Duration::from_millis(200)).is_some()
        || recv_publish(&mut m2, Duration::from_millis(200)).is_some()
        || recv_publish(&mut m3, Duration::from_millis(200)).is_some()
    {}
    for i in 0..30u16 {
        publish_acked(
            &mut p1,
            &format!("sh/{i}"),
            &format!("b-{i}"),
            QoS::AtLeastOnce,
            100 + i,
            false,
        );
    }
    let got = collect(&mut [&mut m1, &mut m2, &mut m3], "b-", 30);
    let mut all: Vec<&String> = got.iter().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 30, "every message once to the group: {got:?}");
    assert_eq!(
        got.iter().map(Vec::len).sum::<usize>(),
        30,
        "no message twice: {got:?}"
    );
    assert!(
        got.iter().all(|g| !g.is_empty()),
        "a member never picked: {got:?}"
    );
    let plain_got = collect(&mut [&mut plain], "b-", 30);
    let mut p: Vec<&String> = plain_got[0].iter().collect();
    p.sort();
    p.dedup();
    assert_eq!(
        (p.len(), plain_got[0].len()),
        (30, 30),
        "the plain subscriber: {plain_got:?}"
    );
}

#[test]
fn a_full_peer_queue_pushes_back_on_qos1_publishers_and_loses_nothing() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    // n1 keeps at most 4 KiB of messages for a peer before back-pressure.
    let n1 = node_with_config(&etcd, "n1", "[cluster]\npeer_queue_bytes = 4096\n");
    let n2 = Node::start(&etcd, "n2", 10);
    n1.wait_linked(1);
    n2.wait_linked(1);
    let (mut sub, _) = connect_ok(n2.addr, v5("bp-sub", true, 0));
    subscribe(&mut sub, 1, "bp/#", QoS::AtLeastOnce);
    let (mut publ, _) = connect_ok(n1.addr, v5("bp-pub", true, 0));
    await_route(&mut publ, &mut sub, "bp/probe");

    // n2 stops reading (its kernel still takes the bytes, so the link stays up for its
    // liveness window): n1's queue for it fills, and a PUBACK is held back instead of a
    // message being dropped.
    let body = "x".repeat(300);
    let acked_within = |publ: &mut Raw, pid: u16, t: Duration| loop {
        match publ.recv(t) {
            Some(Packet::PubAck(a)) if a.packet_id == pid => return true,
            Some(_) => continue,
            None => return false,
        }
    };
    signal(n2.pid(), libc::SIGSTOP);
    let mut withheld = None;
    for i in 1..=40u16 {
        publ.send(&support::publish(
            "bp/t",
            &format!("bp-{i}-{body}"),
            QoS::AtLeastOnce,
            i,
        ));
        if !acked_within(&mut publ, i, Duration::from_millis(700)) {
            withheld = Some(i);
            break;
        }
    }
    signal(n2.pid(), libc::SIGCONT);
    let withheld = withheld.expect("every PUBACK came while the peer queue was full");
    assert!(
        withheld > 5,
        "paused before the queue was full ({withheld})"
    );
    assert!(
        acked_within(&mut publ, withheld, Duration::from_secs(10)),
        "the held PUBACK never came"
    );
    for i in withheld + 1..=40 {
        publish_acked(
            &mut publ,
            "bp/t",
            &format!("bp-{i}-{body}"),
            QoS::AtLeastOnce,
            i,
            false,
        );
    }
    let mut got = Vec::new();
    while let Some(p) = recv_publish(&mut sub, Duration::from_secs(3)) {
        let s = String::from_utf8_lossy(&p.payload).to_string();
        if let Some(n) = s.strip_prefix("bp-").and_then(|r| r.split('-').next()) {
            got.push(n.parse::<u16>().unwrap());
        }
        if got.len() == 40 {
            break;
        }
    }
    got.sort_unstable();
    assert_eq!(got, (1..=40).collect::<Vec<_>>(), "every message once");
    assert!(!n1.log_text().contains("dropped"), "{}", n1.log_text());
}

/// A node with extra TOML configuration.
fn node_with_config(etcd: &Etcd, name: &str, toml: &str) -> Node {
    let conf = support::temp_dir(&format!("{name}-conf")).with_extension("toml");
    std::fs::write(&conf, toml).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"));
    cmd.arg("--config").arg(&conf);
    cmd.args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"]);
    cmd.args(Node::cluster_args(&etcd.url(), name, 10));
    Node::launch(name, cmd)
}

#[test]
fn every_node_sees_every_nodes_cluster_figures_in_sys() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let n1 = node_with_config(&etcd, "n1", "sys_interval_secs = 1\n");
    let n2 = node_with_config(&etcd, "n2", "sys_interval_secs = 1\n");
    n1.wait_linked(1);
    n2.wait_linked(1);
    // On n1, the figures of both nodes: each has one peer linked.
    let (mut s, _) = connect_ok(n1.addr, v5("sys-watch", true, 0));
    subscribe(&mut s, 1, "$SYS/cluster/+/peers/linked", QoS::AtMostOnce);
    let mut seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.len() < 2 || seen.values().any(|v| v != "1") {
        assert!(Instant::now() < deadline, "figures seen: {seen:?}");
        if let Some(p) = recv_publish(&mut s, Duration::from_millis(500)) {
            let v = String::from_utf8_lossy(&p.payload).to_string();
            seen.insert(p.topic.to_string(), v);
        }
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        [
            "$SYS/cluster/n1/peers/linked",
            "$SYS/cluster/n2/peers/linked"
        ]
    );
}
