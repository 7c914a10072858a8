//! Client take-over, sessions and the will cases of mqtt-rules.md, with connections forced onto
//! the same worker and onto different workers (`worker_addrs[i]` lands on worker i).
mod support;

use std::time::Duration;

use bytestring::ByteString;
use ringmq::protocol::*;
use support::*;

const T: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(700);

fn v5(id: &str, clean: bool, expiry: Option<u32>) -> Connect {
    let mut c = connect_packet(ProtocolVersion::V5, id, 60, clean);
    c.properties.session_expiry_interval = expiry;
    c
}

/// (old worker, new worker) pairs: same worker and across workers.
const PLACEMENTS: [(usize, usize); 2] = [(0, 0), (0, 1)];

#[test]
fn v5_takeover_sends_0x8e_and_closes_old_connection() {
    let b = TestBroker::start(2);
    // Clean Start 1 (session ends) and Clean Start 0 with an expiry (session moves).
    let cases = PLACEMENTS
        .into_iter()
        .flat_map(|p| [(p, true, None), (p, false, Some(300))]);
    for (i, ((w_old, w_new), clean, expiry)) in cases.enumerate() {
        let id = format!("to-{i}");
        let (mut old, _) = connect(b.worker_addrs[w_old], v5(&id, clean, expiry));
        subscribe(&mut old, 1, &format!("{id}/#"), QoS::AtLeastOnce);
        let (mut new, ack) = connect(b.worker_addrs[w_new], v5(&id, clean, expiry));
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        let (seen, closed) = old.wait_closed(T);
        assert!(closed.is_some(), "old connection closed ({w_old}->{w_new})");
        assert!(
            matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::SESSION_TAKEN_OVER),
            "old connection got {seen:?}"
        );
        new.send(&Packet::PingReq);
        assert_eq!(new.recv(T), Some(Packet::PingResp), "new connection lives");
    }
}

#[test]
fn v311_takeover_closes_old_connection_without_disconnect() {
    let b = TestBroker::start(2);
    for (i, (w_old, w_new)) in PLACEMENTS.into_iter().enumerate() {
        let id = format!("to311-{i}");
        let (mut old, _) = connect(
            b.worker_addrs[w_old],
            connect_packet(ProtocolVersion::V311, &id, 60, true),
        );
        let (mut new, _) = connect(
            b.worker_addrs[w_new],
            connect_packet(ProtocolVersion::V311, &id, 60, true),
        );
        let (seen, closed) = old.wait_closed(T);
        assert!(closed.is_some());
        assert!(seen.is_empty(), "3.1.1 has no server DISCONNECT: {seen:?}");
        new.send(&Packet::PingReq);
        assert_eq!(new.recv(T), Some(Packet::PingResp));
    }
}

#[test]
fn session_and_queued_qos1_survive_takeover_with_clean_start_0() {
    let b = TestBroker::start(2);
    for (i, (w_old, w_new)) in PLACEMENTS.into_iter().enumerate() {
        let id = format!("persist-{i}");
        let topic = format!("persist/{i}");
        let (mut old, ack) = connect(b.worker_addrs[w_old], v5(&id, true, Some(300)));
        assert!(!ack.session_present);
        subscribe(&mut old, 1, &topic, QoS::AtLeastOnce);
        // A message the old connection receives but never acknowledges (in flight at take-over).
        let (mut publisher, _) = connect(
            b.worker_addrs[1 - w_old],
            v5(&format!("pub-{i}"), true, None),
        );
        publisher.send(&publish(&topic, "m1", QoS::AtLeastOnce, 1));
        match old.recv(T) {
            Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"m1"),
            other => panic!("old got {other:?}"),
        }
        let (mut new, ack) = connect(b.worker_addrs[w_new], v5(&id, false, Some(300)));
        assert!(ack.session_present, "session resumed ({w_old}->{w_new})");
        // The unacknowledged message comes again with DUP, and the subscription still works.
        let again = recv_publish(&mut new, T).expect("inflight message resent");
        assert_eq!(&again.payload[..], b"m1");
        assert!(again.dup);
        publisher.send(&publish(&topic, "m2", QoS::AtLeastOnce, 2));
        let next = recv_publish(&mut new, T).expect("subscription survived");
        assert_eq!(&next.payload[..], b"m2");
    }
}

#[test]
fn session_is_gone_after_takeover_with_clean_start_1() {
    let b = TestBroker::start(2);
    for (i, (w_old, w_new)) in PLACEMENTS.into_iter().enumerate() {
        let id = format!("clean-{i}");
        let topic = format!("clean/{i}");
        let (mut old, _) = connect(b.worker_addrs[w_old], v5(&id, true, Some(300)));
        subscribe(&mut old, 1, &topic, QoS::AtLeastOnce);
        let (mut new, ack) = connect(b.worker_addrs[w_new], v5(&id, true, Some(300)));
        assert!(!ack.session_present);
        let (mut publisher, _) = connect(b.worker_addrs[1], v5(&format!("cpub-{i}"), true, None));
        publisher.send(&publish(&topic, "nobody", QoS::AtLeastOnce, 1));
        assert!(
            recv_publish(&mut new, QUIET).is_none(),
            "old subscription must be gone"
        );
    }
}

#[test]
fn offline_session_queues_qos1_and_delivers_on_resume() {
    let b = TestBroker::start(2);
    let (mut c, _) = connect(b.worker_addrs[0], v5("offline", true, Some(300)));
    subscribe(&mut c, 1, "offline/t", QoS::AtLeastOnce);
    c.send(&Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    c.wait_closed(T);
    let (mut p, _) = connect(b.worker_addrs[1], v5("offline-pub", true, None));
    for k in 0..3 {
        p.send(&publish(
            "offline/t",
            &format!("q{k}"),
            QoS::AtLeastOnce,
            k + 1,
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, ack) = connect(b.worker_addrs[1], v5("offline", false, Some(300)));
    assert!(ack.session_present);
    for k in 0..3 {
        let m = recv_publish(&mut c, T).expect("queued message");
        assert_eq!(m.payload, format!("q{k}").as_bytes(), "in order");
    }
}

/// Will cases on take-over (mqtt-rules.md): returns whether the watcher saw the will.
fn will_published_on_takeover(
    b: &TestBroker,
    tag: &str,
    version: ProtocolVersion,
    old_expiry: Option<u32>,
    will_delay: Option<u32>,
    new_clean: bool,
    placement: (usize, usize),
) -> bool {
    let topic = format!("will/{tag}");
    let (mut watcher, _) = connect(
        b.worker_addrs[1],
        connect_packet(ProtocolVersion::V311, &format!("w-{tag}"), 0, true),
    );
    subscribe(&mut watcher, 1, &topic, QoS::AtLeastOnce);
    let mut old = connect_packet(version, tag, 60, true);
    old.properties.session_expiry_interval = old_expiry;
    if version == ProtocolVersion::V311 {
        old.clean_start = old_expiry.is_none();
    }
    old.will = Some(will(&topic, "will", will_delay));
    let (_old, _) = connect(b.worker_addrs[placement.0], old);
    let mut new = connect_packet(version, tag, 60, new_clean);
    new.properties.session_expiry_interval = old_expiry;
    let (_new, _) = connect(b.worker_addrs[placement.1], new);
    recv_publish(&mut watcher, Duration::from_millis(1500)).is_some()
}

#[test]
fn will_cases_on_takeover_v5() {
    let b = TestBroker::start(2);
    for (i, p) in PLACEMENTS.into_iter().enumerate() {
        // new connection with Clean Start = 1: the old session ends, will now.
        assert!(will_published_on_takeover(
            &b,
            &format!("a{i}"),
            ProtocolVersion::V5,
            Some(300),
            Some(60),
            true,
            p
        ));
        // old session expiry 0: the session ends, will now.
        assert!(will_published_on_takeover(
            &b,
            &format!("b{i}"),
            ProtocolVersion::V5,
            None,
            Some(60),
            false,
            p
        ));
        // will delay 0: will now.
        assert!(will_published_on_takeover(
            &b,
            &format!("c{i}"),
            ProtocolVersion::V5,
            Some(300),
            None,
            false,
            p
        ));
        // will delay > 0 and the session continues: no will.
        assert!(!will_published_on_takeover(
            &b,
            &format!("d{i}"),
            ProtocolVersion::V5,
            Some(300),
            Some(60),
            false,
            p
        ));
    }
}

#[test]
fn will_is_published_on_every_v311_takeover() {
    let b = TestBroker::start(2);
    for (i, p) in PLACEMENTS.into_iter().enumerate() {
        assert!(will_published_on_takeover(
            &b,
            &format!("e{i}"),
            ProtocolVersion::V311,
            None,
            None,
            true,
            p
        ));
        assert!(will_published_on_takeover(
            &b,
            &format!("f{i}"),
            ProtocolVersion::V311,
            Some(300),
            None,
            false,
            p
        ));
    }
}

#[test]
fn normal_disconnect_discards_will_and_0x04_publishes_it() {
    let b = TestBroker::start(2);
    let (mut watcher, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "wd-watch", 0, true),
    );
    subscribe(&mut watcher, 1, "wd/#", QoS::AtLeastOnce);
    for (reason, expect) in [
        (ReasonCode::SUCCESS, false),
        (ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, true),
    ] {
        let mut c = connect_packet(ProtocolVersion::V5, "wd", 60, true);
        c.will = Some(will("wd/x", "w", None));
        let (mut c, _) = connect(b.worker_addrs[1], c);
        c.send(&Packet::Disconnect(Disconnect::new(reason)));
        c.wait_closed(T);
        assert_eq!(
            recv_publish(&mut watcher, Duration::from_millis(1000)).is_some(),
            expect,
            "reason {reason}"
        );
    }
}

#[test]
fn delayed_will_is_cancelled_by_resume_and_published_after_delay_otherwise() {
    let b = TestBroker::start(2);
    let (mut watcher, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "dw-watch", 0, true),
    );
    subscribe(&mut watcher, 1, "dw/#", QoS::AtLeastOnce);
    // Abnormal close (socket dropped), delay 1 s, session expiry 60: published after ~1 s.
    let mut c = v5("dw1", true, Some(60));
    c.will = Some(will("dw/1", "late", Some(1)));
    let (c1, _) = connect(b.worker_addrs[1], c);
    drop(c1);
    assert!(
        recv_publish(&mut watcher, Duration::from_millis(400)).is_none(),
        "not before the delay"
    );
    assert!(
        recv_publish(&mut watcher, Duration::from_secs(3)).is_some(),
        "after the delay"
    );
    // Same, but the client resumes within the delay: never published.
    let mut c = v5("dw2", true, Some(60));
    c.will = Some(will("dw/2", "never", Some(2)));
    let (c2, _) = connect(b.worker_addrs[1], c);
    drop(c2);
    std::thread::sleep(Duration::from_millis(300));
    let (_c2b, ack) = connect(b.worker_addrs[0], v5("dw2", false, Some(60)));
    assert!(ack.session_present);
    assert!(recv_publish(&mut watcher, Duration::from_secs(3)).is_none());
}

/// Two (or three) CONNECTs for one ClientId on different workers at once, many times:
/// exactly one connection is left alive each time, and nothing leaks.
#[test]
fn racing_connects_leave_exactly_one_owner() {
    let b = TestBroker::start(2);
    let iterations = 3000;
    for it in 0..iterations {
        let id = format!("race-{}", it % 7);
        let claimants = 2 + it % 2;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(claimants));
        let handles: Vec<_> = (0..claimants)
            .map(|k| {
                let addr = b.worker_addrs[k % 2];
                let id = id.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut raw = Raw::connect_tcp(addr, ProtocolVersion::V5);
                    barrier.wait();
                    raw.send(&Packet::Connect(Box::new(v5(&id, true, None))));
                    raw
                })
            })
            .collect();
        let mut conns: Vec<Raw> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Every claimant but one must be closed by the broker; the survivor must answer PINGREQ.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut closed = vec![false; claimants];
        while closed.iter().filter(|c| **c).count() < claimants - 1
            && std::time::Instant::now() < deadline
        {
            for (k, c) in conns.iter_mut().enumerate() {
                if !closed[k] && c.wait_closed(Duration::from_millis(1)).1.is_some() {
                    closed[k] = true;
                }
            }
        }
        assert_eq!(
            closed.iter().filter(|c| **c).count(),
            claimants - 1,
            "iteration {it}: all but one claimant closed"
        );
        let survivor = closed.iter().position(|c| !c).unwrap();
        let s = &mut conns[survivor];
        s.send_bytes(&[0xC0, 0x00]).expect("survivor writable");
        let mut alive = false;
        while let Some(p) = s.recv(T) {
            if p == Packet::PingResp {
                alive = true;
                break;
            }
        }
        assert!(alive, "iteration {it}: the survivor is live");
        drop(conns);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.metric("sessions_current"), 0, "no leaked session");
    assert_eq!(b.metric("connections_current"), 0);
}

#[test]
fn empty_client_id_rules() {
    let b = TestBroker::start(1);
    // 3.1.1, clean session 1: accepted with a broker-assigned id.
    let (_c, ack) = connect(b.addr, connect_packet(ProtocolVersion::V311, "", 30, true));
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    // 3.1.1, clean session 0: refused with return code 0x02.
    let mut raw = Raw::connect_tcp(b.addr, ProtocolVersion::V311);
    raw.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V311,
        "",
        30,
        false,
    ))));
    match raw.recv(T) {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code.to_v311_connack(), 0x02),
        other => panic!("{other:?}"),
    }
    // 5.0: Assigned Client Identifier.
    let (_c5, ack) = connect(b.addr, connect_packet(ProtocolVersion::V5, "", 30, true));
    let assigned: Option<ByteString> = ack.properties.assigned_client_identifier;
    assert!(assigned.is_some_and(|s| !s.is_empty()));
}
