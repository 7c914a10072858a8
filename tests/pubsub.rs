//! Publish/subscribe across workers, with our raw client, rumqttc, and Debian's
//! mosquitto_pub / mosquitto_sub when installed.
mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use ringmq::protocol::*;
use support::*;

const T: Duration = Duration::from_secs(5);

#[test]
fn message_crosses_workers_at_every_qos_both_versions() {
    let b = TestBroker::start(2);
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let tag = format!("{v:?}-{qos:?}");
            let (mut sub, _) = connect(
                b.worker_addrs[0],
                connect_packet(v, &format!("s-{tag}"), 30, true),
            );
            let ack = subscribe(&mut sub, 1, &format!("x/{tag}/+"), QoS::ExactlyOnce);
            assert_eq!(ack.reasons, vec![ReasonCode::GRANTED_QOS_2]);
            let (mut publ, _) = connect(
                b.worker_addrs[1],
                connect_packet(v, &format!("p-{tag}"), 30, true),
            );
            publ.send(&publish(&format!("x/{tag}/1"), "hello", qos, 7));
            match qos {
                QoS::AtLeastOnce => {
                    assert!(matches!(publ.recv(T), Some(Packet::PubAck(a)) if a.packet_id == 7))
                }
                QoS::ExactlyOnce => {
                    assert!(matches!(publ.recv(T), Some(Packet::PubRec(a)) if a.packet_id == 7));
                    publ.send(&Packet::PubRel(PubResp::new(7)));
                    assert!(matches!(publ.recv(T), Some(Packet::PubComp(a)) if a.packet_id == 7));
                }
                QoS::AtMostOnce => {}
            }
            let got = recv_publish(&mut sub, T).expect("delivered across workers");
            assert_eq!(got.qos, qos);
            assert_eq!(&got.payload[..], b"hello");
            if qos == QoS::ExactlyOnce {
                // Finish the outbound QoS 2 flow: PUBREL comes, we answer PUBCOMP.
                match sub.recv(T) {
                    Some(Packet::PubRel(r)) => {
                        sub.send(&Packet::PubComp(PubResp::new(r.packet_id)))
                    }
                    other => panic!("expected PUBREL, got {other:?}"),
                }
            }
        }
    }
}

#[test]
fn delivery_qos_is_the_minimum_and_overlaps_give_one_copy() {
    let b = TestBroker::start(2);
    let (mut sub, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V5, "ov", 30, true),
    );
    subscribe(&mut sub, 1, "ov/#", QoS::AtMostOnce);
    subscribe(&mut sub, 2, "ov/+", QoS::AtLeastOnce);
    let (mut p, _) = connect(
        b.worker_addrs[1],
        connect_packet(ProtocolVersion::V5, "ov-p", 30, true),
    );
    p.send(&publish("ov/a", "1", QoS::ExactlyOnce, 1));
    let got = recv_publish(&mut sub, T).unwrap();
    assert_eq!(
        got.qos,
        QoS::AtLeastOnce,
        "highest granted, capped by publish QoS"
    );
    assert!(
        recv_publish(&mut sub, Duration::from_millis(500)).is_none(),
        "one copy"
    );
}

#[test]
fn retained_set_replace_delete_and_delivery_on_subscribe() {
    let b = TestBroker::start(2);
    let (mut p, _) = connect(
        b.worker_addrs[1],
        connect_packet(ProtocolVersion::V311, "rp", 30, true),
    );
    let retained = |payload: &str| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: ByteString::from("ret/a"),
            packet_id: 1,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            properties: Default::default(),
        })
    };
    p.send(&retained("v1"));
    p.send(&retained("v2"));
    std::thread::sleep(Duration::from_millis(200));
    let (mut s, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "rs", 30, true),
    );
    subscribe(&mut s, 1, "ret/#", QoS::AtLeastOnce);
    let got = recv_publish(&mut s, T).expect("retained on subscribe");
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"v2", "replaced");
    p.send(&retained(""));
    std::thread::sleep(Duration::from_millis(200));
    let (mut s2, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "rs2", 30, true),
    );
    subscribe(&mut s2, 1, "ret/#", QoS::AtLeastOnce);
    assert!(
        recv_publish(&mut s2, Duration::from_millis(500)).is_none(),
        "deleted"
    );
}

#[test]
fn dollar_topics_do_not_match_leading_wildcards() {
    let b = TestBroker::start(1);
    let (mut s, _) = connect(b.addr, connect_packet(ProtocolVersion::V311, "d", 30, true));
    subscribe(&mut s, 1, "#", QoS::AtMostOnce);
    let (mut p, _) = connect(
        b.addr,
        connect_packet(ProtocolVersion::V311, "dp", 30, true),
    );
    p.send(&publish("$app/x", "hidden", QoS::AtMostOnce, 0));
    p.send(&publish("app/x", "seen", QoS::AtMostOnce, 0));
    let got = recv_publish(&mut s, T).unwrap();
    assert_eq!(&got.payload[..], b"seen");
}

#[test]
fn shared_subscription_delivers_each_message_to_one_member() {
    let b = TestBroker::start(2);
    let mut members: Vec<Raw> = (0..2)
        .map(|i| {
            let (mut m, _) = connect(
                b.worker_addrs[i],
                connect_packet(ProtocolVersion::V5, &format!("sh{i}"), 30, true),
            );
            subscribe(&mut m, 1, "$share/g/jobs/+", QoS::AtLeastOnce);
            m
        })
        .collect();
    let (mut p, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V5, "shp", 30, true),
    );
    let n = 20;
    for k in 0..n {
        p.send(&publish("jobs/a", &format!("{k}"), QoS::AtLeastOnce, k + 1));
    }
    let mut got = Vec::new();
    for m in members.iter_mut() {
        while let Some(x) = recv_publish(m, Duration::from_millis(700)) {
            got.push(String::from_utf8(x.payload.to_vec()).unwrap());
        }
    }
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..n).map(|k| k.to_string()).collect();
    assert_eq!(got, expected, "each message exactly once across the group");
}

#[test]
fn rumqttc_client_publishes_and_receives_across_workers() {
    use rumqttc::{Client, Event, Incoming, MqttOptions, QoS as RQoS};
    let b = TestBroker::start(2);
    let mk = |id: &str, addr: std::net::SocketAddr| {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(10));
        Client::new(o, 64)
    };
    let (sub, mut sub_conn) = mk("rumq-sub", b.worker_addrs[0]);
    let (publ, mut pub_conn) = mk("rumq-pub", b.worker_addrs[1]);
    sub.subscribe("rumq/+", RQoS::AtLeastOnce).unwrap();
    // Drive the subscriber until SUBACK.
    let mut subscribed = false;
    for ev in sub_conn.iter().take(20) {
        if let Ok(Event::Incoming(Incoming::SubAck(_))) = ev {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed);
    publ.publish("rumq/1", RQoS::AtLeastOnce, false, b"from rumqttc".to_vec())
        .unwrap();
    let t = std::thread::spawn(move || {
        for ev in pub_conn.iter().take(10) {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = ev {
                return true;
            }
        }
        false
    });
    let mut got = None;
    for ev in sub_conn.iter().take(20) {
        if let Ok(Event::Incoming(Incoming::Publish(p))) = ev {
            got = Some(p);
            break;
        }
    }
    let got = got.expect("rumqttc received");
    assert_eq!(got.topic, "rumq/1");
    assert_eq!(&got.payload[..], b"from rumqttc");
    assert!(t.join().unwrap(), "publisher got PUBACK");
}

#[test]
fn mosquitto_clients_interoperate() {
    if Command::new("mosquitto_sub")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("SKIP: mosquitto_sub not installed (apt-get install mosquitto-clients)");
        return;
    }
    let b = TestBroker::start(2);
    for v in ["mqttv311", "mqttv5"] {
        let sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &b.worker_addrs[0].port().to_string(),
            ])
            .args([
                "-V", v, "-t", "mq/#", "-q", "1", "-C", "2", "-W", "10", "-v",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        for (k, qos) in ["0", "1"].iter().enumerate() {
            let st = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &b.worker_addrs[1].port().to_string(),
                ])
                .args([
                    "-V",
                    v,
                    "-t",
                    &format!("mq/{k}"),
                    "-m",
                    &format!("hi{k}"),
                    "-q",
                    qos,
                ])
                .status()
                .unwrap();
            assert!(st.success());
        }
        let out = sub.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_sub got both messages ({v})"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            vec!["mq/0 hi0", "mq/1 hi1"],
            "{v}"
        );
    }
}
