//! The client take-over matrix of `tests/takeover.rs` across the nodes of a ringmq cluster on
//! a real etcd: the old connection on n1, the new one on n2, publishers and will watchers on
//! n3. Sessions (clean start, a continuing session with a message in flight, an offline
//! session with queued messages, an inbound QoS 2 flow) in one cluster, the will cases of
//! `../shared/design/mqtt-rules.md` (MQTT 5 and 3.1.1, delayed wills) in another.
//! `tests/cluster.rs` has the basic take-over across nodes (0x8E, Session Present 1, the
//! subscription moved, a will with delay 0); this file does not repeat it.

#![cfg(feature = "cluster")]

mod support;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use ringmq::protocol::*;
use support::cluster::*;
use support::{connect_packet, publish, recv_publish, subscribe, will, Raw};

/// Bound for an event that must happen.
const T: Duration = Duration::from_secs(10);
/// A window in which nothing may arrive.
const QUIET: Duration = Duration::from_millis(700);
/// The window in which a will that must not go must not arrive.
const NO_WILL: Duration = Duration::from_millis(1500);

/// The old connection was taken over: closed, after DISCONNECT 0x8E for MQTT 5 and with no
/// packet at all for 3.1.1.
fn assert_taken_over(old: &mut Raw, what: &str) {
    let (seen, closed) = old.wait_closed(T);
    assert!(
        closed.is_some(),
        "{what}: the old connection on n1 stays open"
    );
    if old.version == ProtocolVersion::V5 {
        assert!(
            matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::SESSION_TAKEN_OVER),
            "{what}: the old connection got {seen:?}, not DISCONNECT 0x8E"
        );
    } else {
        assert!(
            seen.is_empty(),
            "{what}: 3.1.1 has no server DISCONNECT, the old connection got {seen:?}"
        );
    }
}

/// The next PUBLISH, skipping route probes.
fn next_message(raw: &mut Raw, timeout: Duration) -> Option<Publish> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let p = recv_publish(raw, left)?;
        if &p.payload[..] != b"probe" {
            return Some(p);
        }
    }
}

#[test]
fn session_cases_across_nodes() {
    let Some((_etcd, nodes)) = cluster(3, 5) else {
        return;
    };
    let (n1, n2, n3) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);
    let (mut p3, _) = connect_ok(n3, v5("s-pub-n3", true, 0));

    // 1. Clean Start 1 on n2: DISCONNECT 0x8E on n1, Session Present 0, the old subscription
    //    is gone.
    {
        let (mut old, _) = connect_ok(n1, v5("s-clean", true, 300));
        subscribe(&mut old, 1, "s-clean/t", QoS::AtLeastOnce);
        await_route(&mut p3, &mut old, "s-clean/t");
        let (mut new, ack) = connect_ok(n2, v5("s-clean", true, 300));
        assert!(!ack.session_present, "clean start: Session Present 0");
        assert_taken_over(&mut old, "clean start");
        // Whatever n2 announced reaches n3 before this route: a subscription that had come
        // along to n2 would be known on n3 by then.
        subscribe(&mut new, 2, "s-clean/other", QoS::AtLeastOnce);
        await_route(&mut p3, &mut new, "s-clean/other");
        publish_acked(&mut p3, "s-clean/t", "nobody", QoS::AtLeastOnce, 1, false);
        // And a publish on n2 itself, matched there.
        let (mut p2, _) = connect_ok(n2, v5("s-clean-pub-n2", true, 0));
        publish_acked(&mut p2, "s-clean/t", "nobody-2", QoS::AtLeastOnce, 1, false);
        assert_eq!(
            next_message(&mut new, QUIET),
            None,
            "the old subscription must be gone"
        );
        assert!(alive(&mut new), "the new connection lives");
    }

    // 2. The session continues (Clean Start 0, expiry 300): the QoS 1 message in flight to the
    //    old connection is resent on n2 with DUP, and the subscription still works.
    {
        let (mut old, ack) = connect_ok(n1, v5("s-cont", true, 300));
        assert!(!ack.session_present);
        subscribe(&mut old, 1, "s-cont/t", QoS::AtLeastOnce);
        await_route(&mut p3, &mut old, "s-cont/t");
        publish_acked(&mut p3, "s-cont/t", "m1", QoS::AtLeastOnce, 2, false);
        // Received and never acknowledged.
        let first = loop {
            match old.recv(T) {
                Some(Packet::Publish(p)) if &p.payload[..] == b"probe" => continue,
                Some(Packet::Publish(p)) => break p,
                other => panic!("the old connection got {other:?}, not m1"),
            }
        };
        assert_eq!(&first.payload[..], b"m1");
        assert_eq!(first.qos, QoS::AtLeastOnce);
        assert!(!first.dup);
        let (mut new, ack) = connect_ok(n2, v5("s-cont", false, 300));
        assert!(ack.session_present, "the session came from n1");
        assert_taken_over(&mut old, "continuing session");
        let again = next_message(&mut new, T).expect("the in-flight m1 resent on n2");
        assert_eq!(&again.payload[..], b"m1");
        assert_eq!(again.qos, QoS::AtLeastOnce);
        assert!(again.dup, "a resent message has DUP set: {again:?}");
        await_route(&mut p3, &mut new, "s-cont/t");
        publish_acked(&mut p3, "s-cont/t", "m2", QoS::AtLeastOnce, 3, false);
        let next = next_message(&mut new, T).expect("the subscription survived");
        assert_eq!(&next.payload[..], b"m2");
        assert!(!next.dup);
        assert_eq!(next_message(&mut new, QUIET), None, "nothing more");
    }

    // 3. An offline session on n1 queues QoS 1 messages published on n3; the client comes
    //    back on n2 and gets them in order.
    {
        let (mut c, _) = connect_ok(n1, v5("s-off", true, 300));
        subscribe(&mut c, 1, "s-off/t", QoS::AtLeastOnce);
        await_route(&mut p3, &mut c, "s-off/t");
        c.send(&Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
        let (_, closed) = c.wait_closed(T);
        assert!(closed.is_some(), "closed after DISCONNECT");
        for k in 0..3u16 {
            publish_acked(
                &mut p3,
                "s-off/t",
                &format!("q{k}"),
                QoS::AtLeastOnce,
                10 + k,
                false,
            );
        }
        // A barrier on n3 -> n1: once a probe sent after them arrives on n1, so have they.
        let (mut b1, _) = connect_ok(n1, v5("s-off-barrier", true, 0));
        subscribe(&mut b1, 1, "s-off/barrier", QoS::AtMostOnce);
        await_route(&mut p3, &mut b1, "s-off/barrier");
        let (mut c, ack) = connect_ok(n2, v5("s-off", false, 300));
        assert!(ack.session_present, "the offline session came from n1");
        for k in 0..3 {
            let m = next_message(&mut c, T)
                .unwrap_or_else(|| panic!("queued message q{k} not delivered on n2"));
            assert_eq!(
                String::from_utf8_lossy(&m.payload),
                format!("q{k}"),
                "in order"
            );
        }
        assert_eq!(next_message(&mut c, QUIET), None, "nothing more");
    }

    // 7. Inbound QoS 2 across a take-over: PUBLISH and PUBREC on n1, PUBREL and PUBCOMP on
    //    n2; the subscriber on n3 gets the message exactly once.
    {
        let (mut sub, _) = connect_ok(n3, v5("s-q2-sub", true, 0));
        subscribe(&mut sub, 1, "s-q2/t", QoS::ExactlyOnce);
        let (mut old, _) = connect_ok(n1, v5("s-q2", true, 300));
        await_route(&mut old, &mut sub, "s-q2/t");
        old.send(&publish("s-q2/t", "once", QoS::ExactlyOnce, 7));
        match old.recv(T) {
            Some(Packet::PubRec(r)) => {
                assert_eq!(r.packet_id, 7);
                assert_eq!(r.reason, ReasonCode::SUCCESS, "{r:?}");
            }
            other => panic!("expected PUBREC 7, got {other:?}"),
        }
        let (mut new, ack) = connect_ok(n2, v5("s-q2", false, 300));
        assert!(ack.session_present, "the session came from n1");
        assert_taken_over(&mut old, "QoS 2 publisher");
        new.send(&Packet::PubRel(PubResp::new(7)));
        loop {
            match new.recv(T) {
                Some(Packet::PubComp(c)) => {
                    assert_eq!(c.packet_id, 7);
                    assert_eq!(
                        c.reason,
                        ReasonCode::SUCCESS,
                        "the packet id came along with the session: {c:?}"
                    );
                    break;
                }
                Some(Packet::Publish(p)) => panic!("the publisher got {p:?}"),
                Some(_) => continue,
                None => panic!("no PUBCOMP 7 on n2"),
            }
        }
        // The control: an id the session never had gets 0x92 Packet Identifier not found.
        new.send(&Packet::PubRel(PubResp::new(8)));
        match new.recv(T) {
            Some(Packet::PubComp(c)) => {
                assert_eq!(c.packet_id, 8);
                assert_eq!(c.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND, "{c:?}");
            }
            other => panic!("expected PUBCOMP 8, got {other:?}"),
        }
        let mut got = Vec::new();
        while let Some(p) = next_message(&mut sub, Duration::from_millis(1500)) {
            got.push(String::from_utf8_lossy(&p.payload).to_string());
        }
        assert_eq!(got, ["once"], "the QoS 2 message exactly once");
    }
}

/// The next will on the watcher, skipping route probes.
fn next_will(watcher: &mut Raw, timeout: Duration) -> Option<Publish> {
    next_message(watcher, timeout)
}

/// The will on `topic` arrives (and no other will first).
fn expect_will(watcher: &mut Raw, topic: &str, what: &str) {
    match next_will(watcher, T) {
        Some(p) if p.topic == topic => {}
        Some(p) => panic!("{what}: a will on {} before the one on {topic}", p.topic),
        None => panic!("{what}: the will on {topic} was not published"),
    }
}

/// No will arrives for `window`.
fn expect_no_will(watcher: &mut Raw, window: Duration, what: &str) {
    if let Some(p) = next_will(watcher, window) {
        panic!(
            "{what}: a will on {} ({:?}) was published",
            p.topic,
            String::from_utf8_lossy(&p.payload)
        );
    }
}

/// One take-over with a will: the old connection on n1 (`old`: expiry and will), the new one
/// on n2; checks the take-over itself. Returns the new connection.
fn takeover_with_will(
    nodes: &[Node],
    mut old: Connect,
    topic: &str,
    delay: Option<u32>,
    new: Connect,
) -> (Raw, ConnAck) {
    old.will = Some(will(topic, topic, delay));
    let what = old.client_id.to_string();
    let (mut o, _) = connect_ok(nodes[0].addr, old);
    let (n, ack) = connect_ok(nodes[1].addr, new);
    assert_taken_over(&mut o, &what);
    (n, ack)
}

#[test]
fn will_cases_across_nodes() {
    let Some((_etcd, nodes)) = cluster(3, 5) else {
        return;
    };
    // The will watcher on n3; the will topics are routed there from n1 and from n2.
    let (mut watcher, _) = connect_ok(nodes[2].addr, v5("w-watch", true, 0));
    subscribe(&mut watcher, 1, "w/#", QoS::AtLeastOnce);
    let (mut w1, _) = connect_ok(nodes[0].addr, v5("w-probe-n1", true, 0));
    await_route(&mut w1, &mut watcher, "w/probe");
    let (mut w2, _) = connect_ok(nodes[1].addr, v5("w-probe-n2", true, 0));
    await_route(&mut w2, &mut watcher, "w/probe");

    // 4a. MQTT 5, new connection with Clean Start 1: the old session ends, will now.
    let (_a, ack) = takeover_with_will(
        &nodes,
        v5("w-a", true, 300),
        "w/a",
        Some(60),
        v5("w-a", true, 300),
    );
    assert!(!ack.session_present);
    expect_will(&mut watcher, "w/a", "4a clean start");

    // 4b. Old session expiry 0: the session ends, will now.
    let (_b, ack) = takeover_with_will(
        &nodes,
        v5("w-b", true, 0),
        "w/b",
        Some(60),
        v5("w-b", false, 0),
    );
    assert!(
        !ack.session_present,
        "an expiry 0 session does not continue"
    );
    expect_will(&mut watcher, "w/b", "4b old expiry 0");

    // 4c. Will Delay 0, the session continues: will now.
    let (_c, ack) = takeover_with_will(
        &nodes,
        v5("w-c", true, 300),
        "w/c",
        None,
        v5("w-c", false, 300),
    );
    assert!(ack.session_present);
    expect_will(&mut watcher, "w/c", "4c will delay 0");

    // 4d. Will Delay 30 s, the session continues: no will.
    let (mut d, ack) = takeover_with_will(
        &nodes,
        v5("w-d", true, 300),
        "w/d",
        Some(30),
        v5("w-d", false, 300),
    );
    assert!(ack.session_present);
    expect_no_will(
        &mut watcher,
        NO_WILL,
        "4d will delay 30 s, session continues",
    );
    assert!(alive(&mut d));

    // 5. MQTT 3.1.1: every take-over publishes the will (clean session 1 and 0), and the old
    //    connection is closed with no DISCONNECT.
    for (clean, topic) in [(true, "w/e"), (false, "w/f")] {
        let id = format!("w-311-{clean}");
        let c = || connect_packet(ProtocolVersion::V311, &id, 60, clean);
        let (mut new, ack) = takeover_with_will(&nodes, c(), topic, None, c());
        assert_eq!(ack.session_present, !clean, "3.1.1 clean session {clean}");
        expect_will(
            &mut watcher,
            topic,
            &format!("5 3.1.1 clean session {clean}"),
        );
        assert!(alive(&mut new));
    }

    // 6. Delayed will (3 s, session expiry 300), both connections on n1 dropped without
    //    DISCONNECT: the one that resumes on n2 within the delay never has its will
    //    published; the other's is published after the delay.
    let delay = 3;
    let mut back = v5("w-back", true, 300);
    back.will = Some(will("w/back", "w/back", Some(delay)));
    let (back, _) = connect_ok(nodes[0].addr, back);
    let mut gone = v5("w-gone", true, 300);
    gone.will = Some(will("w/gone", "w/gone", Some(delay)));
    let (gone, _) = connect_ok(nodes[0].addr, gone);
    let t0 = Instant::now();
    for c in [back, gone] {
        c.stream.shutdown(Shutdown::Both).unwrap();
    }
    // Not a bound on anything: n1 sees both closes first, so the resume below takes over an
    // offline session (a take-over of a still-open one would also keep the will back).
    std::thread::sleep(Duration::from_millis(300));
    let (mut resumed, ack) = connect_ok(nodes[1].addr, v5("w-back", false, 300));
    assert!(ack.session_present, "the session of w-back came from n1");
    // Until the delay + 1.5 s (and longer if the other will is late): only w/gone, after
    // the delay.
    let quiet_until = t0 + Duration::from_secs(delay.into()) + NO_WILL;
    let mut gone_at = None;
    loop {
        let now = Instant::now();
        let until = if gone_at.is_none() {
            quiet_until.max(t0 + T)
        } else {
            quiet_until
        };
        let Some(left) = until.checked_duration_since(now) else {
            break;
        };
        match next_will(&mut watcher, left) {
            Some(p) if p.topic == "w/gone" && gone_at.is_none() => {
                gone_at = Some(t0.elapsed());
            }
            Some(p) => panic!(
                "6: a will on {} at {:?} ({:?})",
                p.topic,
                t0.elapsed(),
                String::from_utf8_lossy(&p.payload)
            ),
            None => break,
        }
    }
    let gone_at = gone_at.expect("6: the will of w-gone, which never came back, was not published");
    assert!(
        gone_at >= Duration::from_millis(2500),
        "6: the will of w-gone was published at {gone_at:?}, before its delay of {delay} s"
    );
    assert!(alive(&mut resumed));
}
