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
