//! rumqttc 0.24 (a real client library) against the broker over loopback with two workers:
//! MQTT 5 subscription options, properties, subscription identifiers and broker-assigned Topic
//! Aliases resolved by the client; MQTT 3.1.1 QoS 2 both ways across workers.
mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

const T: Duration = Duration::from_secs(5);

mod v5c {
    use super::*;
    pub use rumqttc::v5::mqttbytes::v5::{
        Filter, Packet, PublishProperties, RetainForwardRule, SubscribeProperties,
        SubscribeReasonCode,
    };
    pub use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Event, MqttOptions};

    pub struct C {
        pub client: Client,
        events: mpsc::Receiver<Packet>,
    }

    impl C {
        pub fn new(id: &str, addr: std::net::SocketAddr, f: impl FnOnce(&mut MqttOptions)) -> C {
            let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
            o.set_keep_alive(Duration::from_secs(10));
            f(&mut o);
            let (client, mut conn) = Client::new(o, 64);
            let (tx, events) = mpsc::channel();
            std::thread::spawn(move || {
                for ev in conn.iter() {
                    match ev {
                        Ok(Event::Incoming(p)) => {
                            if tx.send(p).is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            C { client, events }
        }

        /// The next incoming packet that `pick` accepts (others skipped), within 5 s.
        pub fn wait<R>(&self, mut pick: impl FnMut(Packet) -> Option<R>) -> R {
            let deadline = Instant::now() + T;
            loop {
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .expect("rumqttc event within 5 s");
                let p = self.events.recv_timeout(left).expect("rumqttc event");
                if let Some(r) = pick(p) {
                    return r;
                }
            }
        }

        pub fn publish(&self) -> rumqttc::v5::mqttbytes::v5::Publish {
            self.wait(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
        }
    }
}

#[test]
fn rumqttc_v5_options_properties_and_broker_topic_aliases() {
    use v5c::*;
    let b = TestBroker::start_with(2, |c| c.outbound_topic_aliases = 4);
    let publ = C::new("r5-pub", b.worker_addrs[1], |_| {});
    publ.wait(|p| matches!(p, Packet::ConnAck(_)).then_some(()));
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("r5/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("r5/ret", QoS::AtLeastOnce, true, "kept", props.clone())
        .unwrap();
    publ.wait(|p| matches!(p, Packet::PubAck(_)).then_some(()));

    let sub = C::new("r5-sub", b.worker_addrs[0], |o| {
        o.set_topic_alias_max(Some(4));
    });
    let mut f = Filter::new("r5/#", QoS::ExactlyOnce);
    f.nolocal = true;
    f.preserve_retain = true;
    f.retain_forward_rule = RetainForwardRule::OnEverySubscribe;
    sub.client
        .subscribe_many_with_properties(
            [f],
            SubscribeProperties {
                id: Some(21),
                user_properties: vec![],
            },
        )
        .unwrap();
    let codes = sub.wait(|p| match p {
        Packet::SubAck(a) => Some(a.return_codes),
        _ => None,
    });
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]);
    let r = sub.publish();
    assert_eq!(
        (&r.topic[..], &r.payload[..], r.retain),
        (&b"r5/ret"[..], &b"kept"[..], true)
    );
    let rp = r.properties.expect("properties");
    assert_eq!(rp.subscription_identifiers, vec![21]);
    assert_eq!(rp.user_properties, props.user_properties);
    assert_eq!(rp.response_topic, props.response_topic);
    assert_eq!(rp.correlation_data, props.correlation_data);
    assert_eq!(rp.content_type, props.content_type);
    assert_eq!(rp.payload_format_indicator, Some(1));
    assert_eq!(rp.topic_alias, Some(1), "broker assigned alias 1");

    // No Local: the subscriber's own message does not come back.
    sub.client
        .publish("r5/own", QoS::AtLeastOnce, false, "own")
        .unwrap();
    sub.wait(|p| matches!(p, Packet::PubAck(_)).then_some(()));
    // Two live QoS 2 messages on one topic: the second is sent with the alias only, and
    // rumqttc resolves it; Retain As Published keeps RETAIN on a live retained message.
    for (payload, retain) in [("l1", false), ("l2", true)] {
        publ.client
            .publish("r5/live", QoS::ExactlyOnce, retain, payload)
            .unwrap();
        publ.wait(|p| matches!(p, Packet::PubComp(_)).then_some(()));
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = sub.publish();
        let alias = p.properties.as_ref().and_then(|x| x.topic_alias);
        got.push((
            String::from_utf8(p.topic.to_vec()).unwrap(),
            String::from_utf8(p.payload.to_vec()).unwrap(),
            p.retain,
            p.qos,
            alias,
        ));
    }
    assert_eq!(
        got,
        vec![
            (
                "r5/live".into(),
                "l1".into(),
                false,
                QoS::ExactlyOnce,
                Some(2)
            ),
            (
                "r5/live".into(),
                "l2".into(),
                true,
                QoS::ExactlyOnce,
                Some(2)
            ),
        ],
        "own message skipped, alias resolved, order kept"
    );
}

#[test]
fn rumqttc_v311_qos2_both_directions_across_workers() {
    use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
    let b = TestBroker::start(2);
    let mk = |id: &str, addr: std::net::SocketAddr| {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(10));
        let (c, mut conn) = Client::new(o, 64);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        (c, rx)
    };
    let wait = |rx: &mpsc::Receiver<Incoming>, f: &mut dyn FnMut(&Incoming) -> bool| loop {
        let p = rx.recv_timeout(T).expect("rumqttc event within 5 s");
        if f(&p) {
            return p;
        }
    };
    let (sub, sub_rx) = mk("r4-sub", b.worker_addrs[0]);
    let (publ, pub_rx) = mk("r4-pub", b.worker_addrs[1]);
    sub.subscribe("r4/#", QoS::ExactlyOnce).unwrap();
    wait(&sub_rx, &mut |p| matches!(p, Incoming::SubAck(_)));
    for k in 0..5 {
        publ.publish("r4/t", QoS::ExactlyOnce, false, format!("m{k}"))
            .unwrap();
    }
    let mut comps = 0;
    wait(&pub_rx, &mut |p| {
        comps += usize::from(matches!(p, Incoming::PubComp(_)));
        comps == 5
    });
    // The subscriber's side: five PUBLISH (QoS 2, in order) and, once rumqttc sent PUBREC, the
    // broker's PUBREL for each.
    let mut got = Vec::new();
    let mut rels = 0;
    while got.len() < 5 || rels < 5 {
        match wait(&sub_rx, &mut |p| {
            matches!(p, Incoming::Publish(_) | Incoming::PubRel(_))
        }) {
            Incoming::Publish(p) => {
                assert_eq!(p.qos, QoS::ExactlyOnce);
                got.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
            _ => rels += 1,
        }
    }
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(rels, 5);
}

/// Take-over seen by a real client library (MQTT 5), across workers: the old rumqttc client
/// receives DISCONNECT 0x8E, the new one gets Session Present = 1 and the subscription the old
/// one made (Clean Start 0, session expiry 300 s) still delivers, to the new connection only.
#[test]
fn rumqttc_v5_takeover_across_workers_keeps_the_session() {
    use rumqttc::v5::mqttbytes::v5::{ConnectProperties, DisconnectReasonCode};
    use v5c::*;
    let b = TestBroker::start(2);
    let persistent = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false);
        let mut p = ConnectProperties::new();
        p.session_expiry_interval = Some(300);
        o.set_connect_properties(p);
    };
    // The old client's own loop: rumqttc reports a server DISCONNECT as an error.
    let mut o = rumqttc::v5::MqttOptions::new(
        "r5-take",
        b.worker_addrs[0].ip().to_string(),
        b.worker_addrs[0].port(),
    );
    o.set_keep_alive(Duration::from_secs(10));
    persistent(&mut o);
    let (old, mut old_conn) = rumqttc::v5::Client::new(o, 16);
    let (old_tx, old_rx) = mpsc::channel::<Result<Packet, Option<DisconnectReasonCode>>>();
    std::thread::spawn(move || {
        for ev in old_conn.iter() {
            match ev {
                Ok(rumqttc::v5::Event::Incoming(p)) => {
                    let _ = old_tx.send(Ok(p));
                }
                Ok(_) => {}
                Err(rumqttc::v5::ConnectionError::MqttState(
                    rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                )) => {
                    let _ = old_tx.send(Err(Some(reason_code)));
                    break;
                }
                Err(e) => {
                    eprintln!("old client ended: {e:?}");
                    let _ = old_tx.send(Err(None));
                    break;
                }
            }
        }
    });
    let old_next = |want: &str| old_rx.recv_timeout(T).unwrap_or_else(|_| panic!("{want}"));
    assert!(matches!(old_next("CONNACK"), Ok(Packet::ConnAck(_))));
    old.subscribe("r5take/#", QoS::AtLeastOnce)
        .expect("subscribe");
    assert!(matches!(old_next("SUBACK"), Ok(Packet::SubAck(_))));

    let new = C::new("r5-take", b.worker_addrs[1], persistent);
    let ack = new.wait(|p| match p {
        Packet::ConnAck(a) => Some(a),
        _ => None,
    });
    assert!(ack.session_present, "the session carried over");
    let reason = loop {
        match old_next("DISCONNECT on the old connection") {
            Ok(_) => {}
            Err(r) => break r,
        }
    };
    assert_eq!(reason, Some(DisconnectReasonCode::SessionTakenOver));

    let publ = C::new("r5-take-pub", b.worker_addrs[0], |_| {});
    publ.wait(|p| matches!(p, Packet::ConnAck(_)).then_some(()));
    publ.client
        .publish("r5take/x", QoS::AtLeastOnce, false, "after")
        .unwrap();
    let got = new.publish();
    assert_eq!(&got.payload[..], b"after");
    assert_eq!(b.metric("connections_current"), 2, "old connection closed");
}

/// MQTT 3.1.1 take-over with a real client, Clean Session 0 then Clean Session 1: the old
/// connection is closed (3.1.1 has no DISCONNECT from the server), Session Present follows the
/// new connection's Clean Session flag.
#[test]
fn rumqttc_v311_takeover_session_present_follows_clean_session() {
    use rumqttc::{Client, Event, Incoming, MqttOptions};
    let b = TestBroker::start(2);
    let mk = |addr: std::net::SocketAddr, clean: bool| {
        let mut o = MqttOptions::new("r4-take", addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(10));
        o.set_clean_session(clean);
        let (c, mut conn) = Client::new(o, 16);
        let (tx, rx) = mpsc::channel::<Option<Incoming>>();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Some(p)).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = tx.send(None); // the connection ended
                        break;
                    }
                }
            }
        });
        (c, rx)
    };
    let connack = |rx: &mpsc::Receiver<Option<Incoming>>| loop {
        match rx.recv_timeout(T).expect("event within 5 s") {
            Some(Incoming::ConnAck(a)) => return a.session_present,
            Some(_) => {}
            None => panic!("closed before CONNACK"),
        }
    };
    let ended = |rx: &mpsc::Receiver<Option<Incoming>>| {
        while rx
            .recv_timeout(T)
            .expect("old connection closed within 5 s")
            .is_some()
        {}
    };
    let (_c1, rx1) = mk(b.worker_addrs[0], false);
    assert!(!connack(&rx1), "first connect: no session yet");
    let (_c2, rx2) = mk(b.worker_addrs[1], false);
    assert!(connack(&rx2), "Clean Session 0 resumes the session");
    ended(&rx1);
    let (_c3, rx3) = mk(b.worker_addrs[0], true);
    assert!(!connack(&rx3), "Clean Session 1 discards it");
    ended(&rx2);
}

/// PUBACK / PUBREC reason 0x10 No matching subscribers (MQTT 5 sections 3.4.2.1, 3.5.2.1) as
/// rumqttc sees it, two workers: 0x10 while nobody subscribes (the QoS 2 flow still ends with
/// PUBCOMP), 0x00 once a client on the other worker has its SUBACK, 0x00 always with the
/// setting off.
#[test]
fn rumqttc_v5_puback_0x10_no_matching_subscribers() {
    use rumqttc::v5::mqttbytes::v5::{PubAckReason, PubCompReason, PubRecReason};
    use v5c::*;
    let ack = |c: &C, topic: &str, qos: QoS| -> (Option<PubAckReason>, Option<PubRecReason>) {
        c.client.publish(topic, qos, false, "m").unwrap();
        match qos {
            QoS::AtLeastOnce => (
                Some(c.wait(|p| match p {
                    Packet::PubAck(a) => Some(a.reason),
                    _ => None,
                })),
                None,
            ),
            _ => {
                let rec = c.wait(|p| match p {
                    Packet::PubRec(r) => Some(r.reason),
                    _ => None,
                });
                let comp = c.wait(|p| match p {
                    Packet::PubComp(r) => Some(r.reason),
                    _ => None,
                });
                assert_eq!(comp, PubCompReason::Success, "the QoS 2 flow goes on");
                (None, Some(rec))
            }
        }
    };
    let b = TestBroker::start(2);
    let publ = C::new("nm-pub", b.worker_addrs[0], |_| {});
    publ.wait(|p| matches!(p, Packet::ConnAck(_)).then_some(()));
    assert_eq!(
        ack(&publ, "nm/a", QoS::AtLeastOnce),
        (Some(PubAckReason::NoMatchingSubscribers), None)
    );
    assert_eq!(
        ack(&publ, "nm/a", QoS::ExactlyOnce),
        (None, Some(PubRecReason::NoMatchingSubscribers))
    );
    let sub = C::new("nm-sub", b.worker_addrs[1], |_| {});
    sub.wait(|p| matches!(p, Packet::ConnAck(_)).then_some(()));
    sub.client.subscribe("nm/#", QoS::AtLeastOnce).unwrap();
    sub.wait(|p| matches!(p, Packet::SubAck(_)).then_some(()));
    assert_eq!(
        ack(&publ, "nm/a", QoS::AtLeastOnce),
        (Some(PubAckReason::Success), None)
    );
    assert_eq!(
        ack(&publ, "nm/a", QoS::ExactlyOnce),
        (None, Some(PubRecReason::Success))
    );
    assert_eq!(&sub.publish().payload[..], b"m");
    assert_eq!(
        ack(&publ, "other", QoS::AtLeastOnce),
        (Some(PubAckReason::NoMatchingSubscribers), None)
    );
    drop(b);

    let b = TestBroker::start_with(2, |c| c.no_matching_subscribers_reason = false);
    let publ = C::new("nm-pub-off", b.worker_addrs[0], |_| {});
    publ.wait(|p| matches!(p, Packet::ConnAck(_)).then_some(()));
    assert_eq!(
        ack(&publ, "nm/a", QoS::AtLeastOnce),
        (Some(PubAckReason::Success), None)
    );
    assert_eq!(
        ack(&publ, "nm/a", QoS::ExactlyOnce),
        (None, Some(PubRecReason::Success))
    );
}
