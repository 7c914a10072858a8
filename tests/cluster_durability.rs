//! A cluster whose nodes have data dirs (`--data-dir`, `--durability sync`), on a real etcd:
//! a node restarted on its data dir claims the sessions it restored before it serves, so
//! they move to another node by the normal take-over; a restored copy whose client moved to
//! another node while this one was down is dropped, not served beside the newer one; and a
//! session taken over by another node is dropped from the old node's disk only once the new
//! node has stored it.

#![cfg(feature = "cluster")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringmq::protocol::*;
use support::cluster::*;
use support::{recv_publish, subscribe, temp_dir};

const LEASE: u64 = 3;

/// A node with a data dir of its own (the same dir again: a restart).
fn durable_node(etcd: &Etcd, name: &str, dir: &Path) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    cmd.args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args(["--durability", "sync"])
        .args(Node::cluster_args(&etcd.url(), name, LEASE));
    let node = Node::launch(name, cmd);
    wait_log(&node, "cluster: serving");
    node
}

fn wait_log(node: &Node, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.log_text().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the log:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(node: &mut Node) {
    node.child.kill().unwrap();
    let _ = node.child.wait();
}

/// A clean stop (SIGTERM): everything the node accepted is on its disk when it exits.
fn stop(node: &mut Node) {
    signal(node.child.id(), libc::SIGTERM);
    let _ = node.child.wait();
}

struct Dirs(Vec<PathBuf>);
impl Drop for Dirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn restored_sessions_are_claimed_and_stale_copies_dropped() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let dirs = Dirs(vec![temp_dir("cd-n1"), temp_dir("cd-n2")]);
    let mut n1 = durable_node(&etcd, "n1", &dirs.0[0]);
    let n2 = durable_node(&etcd, "n2", &dirs.0[1]);
    n1.wait_linked(1);
    n2.wait_linked(1);

    // Two persistent sessions on n1, offline; "keep" has a QoS 1 message queued.
    for (id, filter) in [("keep", "d/keep"), ("moved", "d/moved")] {
        let (mut c, _) = connect_ok(n1.addr, v5(id, true, 600));
        subscribe(&mut c, 1, filter, QoS::AtLeastOnce);
        c.send(&Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
        c.wait_closed(Duration::from_secs(5));
    }
    let (mut p2, _) = connect_ok(n2.addr, v5("d-pub", true, 0));
    let (mut probe, _) = connect_ok(n1.addr, v5("d-probe", true, 0));
    subscribe(&mut probe, 1, "d/#", QoS::AtLeastOnce);
    await_route(&mut p2, &mut probe, "d/probe");
    publish_acked(&mut p2, "d/keep", "queued", QoS::AtLeastOnce, 1, false);
    // The probe subscriber on n1 saw it: so did the offline session beside it.
    let m = recv_publish(&mut probe, Duration::from_secs(5)).expect("routed to n1");
    assert_eq!(&m.payload[..], b"queued");

    // n1 goes down (a clean stop: the message n2 forwarded is in n1's log by then; a crash
    // could come before n1's commit, since n2's PUBACK does not wait for other nodes').
    // While it is down, "moved" connects to n2: n1 is not there to hand its session over, so
    // it starts a new one there.
    stop(&mut n1);
    std::thread::sleep(Duration::from_secs(1));
    let (mut moved, ack) = connect_ok(n2.addr, v5("moved", false, 600));
    assert!(!ack.session_present, "n1 was down: nobody had the session");
    subscribe(&mut moved, 1, "d/moved-now", QoS::AtLeastOnce);

    // n1 comes back on its data dir: it claims "keep" (nobody holds it) and drops its copy
    // of "moved" (n2 holds it) before it serves.
    let n1 = durable_node(&etcd, "n1", &dirs.0[0]);
    wait_log(&n1, "held by another node");
    let log = n1.log_text();
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("held by another node"))
        .collect();
    assert!(
        dropped.len() == 1 && dropped[0].contains("client_id=moved"),
        "only the stale copy of \"moved\" goes:\n{log}"
    );
    n1.wait_linked(1);

    // "keep" continues from n1's disk on n2, by the take-over across nodes, with its
    // queued message.
    let (mut keep, ack) = connect_ok(n2.addr, v5("keep", false, 600));
    assert!(ack.session_present, "the restored session came from n1");
    let m = recv_publish(&mut keep, Duration::from_secs(10)).expect("the queued message");
    assert_eq!(&m.payload[..], b"queued");
    // "moved" on n2 was not disturbed, and n1 serves nothing for its old subscription.
    assert!(alive(&mut moved), "n2's session of \"moved\" was disturbed");
    let (mut p1, _) = connect_ok(n1.addr, v5("d-pub-1", true, 0));
    await_route(&mut p1, &mut moved, "d/moved-now");
    publish_acked(&mut p1, "d/moved", "old", QoS::AtLeastOnce, 2, false);
    let (mut again, ack) = connect_ok(n2.addr, v5("moved", false, 600));
    assert!(ack.session_present);
    while let Some(p) = recv_publish(&mut again, Duration::from_millis(700)) {
        assert_ne!(
            &p.payload[..],
            b"old",
            "the dropped copy's subscription still routes"
        );
    }
}

#[test]
fn a_session_taken_over_across_nodes_leaves_the_old_disk_after_the_new_one_stored_it() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let dirs = Dirs(vec![temp_dir("cd2-n1"), temp_dir("cd2-n2")]);
    let mut n1 = durable_node(&etcd, "n1", &dirs.0[0]);
    let n2 = durable_node(&etcd, "n2", &dirs.0[1]);
    n1.wait_linked(1);
    let (mut c, _) = connect_ok(n1.addr, v5("t-1", true, 600));
    subscribe(&mut c, 1, "t/1", QoS::AtLeastOnce);
    // The take-over to n2: the session moves, and n2 tells n1 once it has it on disk.
    let (mut c2, ack) = connect_ok(n2.addr, v5("t-1", false, 600));
    assert!(ack.session_present);
    c.wait_closed(Duration::from_secs(5));
    assert!(alive(&mut c2));
    // n1 restarts: had it kept its copy (no DROP logged), it would restore it and find the
    // id held by n2; it restores nothing of t-1.
    // (n2 stores it, tells n1, n1 logs the drop: milliseconds; this waits far longer.)
    std::thread::sleep(Duration::from_secs(2));
    kill(&mut n1);
    let n1 = durable_node(&etcd, "n1", &dirs.0[0]);
    let log = n1.log_text();
    assert!(
        !log.contains("held by another node"),
        "n1 kept its copy of t-1 after n2 stored it:\n{log}"
    );
    assert!(alive(&mut c2), "the session on n2 was disturbed");
}
