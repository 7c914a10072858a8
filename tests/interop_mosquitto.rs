//! Interoperability with Debian's mosquitto_pub / mosquitto_sub (2.0.x): MQTT 5 properties in
//! both directions, broker-assigned Topic Aliases resolved by a real client, shared
//! subscriptions with members on different workers, retained messages. Every test skips with a
//! message when the tools are not installed (`apt-get install mosquitto-clients`).
//!
//! Synchronisation without sleeps: a mosquitto_sub is known to be subscribed once it printed a
//! retained message that exists before it starts (retained messages are sent after SUBACK, and
//! all filters of one SUBSCRIBE are indexed before that).
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use ringmq::protocol::*;
use support::*;

const T: Duration = Duration::from_secs(5);

fn port_args(addr: SocketAddr) -> [String; 4] {
    [
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
    ]
}

fn mosquitto_pub(addr: SocketAddr, args: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args(port_args(addr))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Sub {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Sub {
    /// mosquitto_sub printing one line per message (`-W 10` bounds every wait).
    fn spawn(addr: SocketAddr, args: &[&str]) -> Sub {
        let mut child = Command::new("mosquitto_sub")
            .args(port_args(addr))
            .args(["-W", "10"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Sub { child, lines }
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.lines.read_line(&mut s).unwrap();

        assert!(
            !s.is_empty(),
            "mosquitto_sub ended before printing a message"
        );
        s.trim_end_matches('\n').to_string()
    }

    fn finish(mut self) {
        let st = self.child.wait().unwrap();
        assert!(st.success(), "mosquitto_sub exit status {st}");
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish_packet(topic: &str, payload: &[u8], qos: QoS, pid: u16, retain: bool) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: ByteString::from(topic),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        payload: Bytes::copy_from_slice(payload),
        properties: Default::default(),
    }
}

/// Send a QoS 1 PUBLISH and wait for its PUBACK (0x00, or 0x10 No matching subscribers: a
/// retained message sent before anyone subscribes).
fn send_qos1(raw: &mut Raw, p: Publish) {
    let id = p.packet_id;
    raw.send(&Packet::Publish(p));
    match raw.recv(T) {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.packet_id, id);
            assert!(
                [ReasonCode::SUCCESS, ReasonCode::NO_MATCHING_SUBSCRIBERS].contains(&a.reason),
                "{:?}",
                a.reason
            );
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[test]
fn mosquitto_pub_v5_properties_reach_subscriber_unchanged() {
    if !have_mosquitto() {
        return;
    }
    let b = TestBroker::start(2);
    let (mut s, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V5, "imq-s", 30, true),
    );
    s.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "imq/#".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..Default::default()
            },
        )],
        properties: SubscribeProperties {
            subscription_identifier: Some(11),
            ..Default::default()
        },
    }));
    assert!(matches!(s.recv(T), Some(Packet::SubAck(_))));
    mosquitto_pub(
        b.worker_addrs[1],
        &[
            "-V",
            "mqttv5",
            "-q",
            "2",
            "-t",
            "imq/p",
            "-m",
            "héllo",
            "-D",
            "publish",
            "user-property",
            "k",
            "v1",
            "-D",
            "publish",
            "user-property",
            "k",
            "v2",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "imq/reply",
            "-D",
            "publish",
            "correlation-data",
            "c0rr",
            "-D",
            "publish",
            "message-expiry-interval",
            "120",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
        ],
    );
    let p = recv_publish(&mut s, T).expect("delivered");
    assert_eq!(
        (p.topic.as_ref(), &p.payload[..]),
        ("imq/p", "héllo".as_bytes())
    );
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let pr = &p.properties;
    assert_eq!(
        pr.user_properties,
        vec![("k".into(), "v1".into()), ("k".into(), "v2".into())]
    );
    assert_eq!(pr.content_type.as_deref(), Some("text/plain"));
    assert_eq!(pr.response_topic.as_deref(), Some("imq/reply"));
    assert_eq!(pr.correlation_data.as_deref(), Some(&b"c0rr"[..]));
    assert_eq!(pr.payload_format_indicator, Some(1));
    let left = pr.message_expiry_interval.unwrap();
    assert!((115..=120).contains(&left), "expiry {left}");
    assert_eq!(pr.subscription_identifiers, vec![11]);
    assert_eq!(pr.topic_alias, None);

    // MQTT 3.1.1 publisher, retained, read by a new subscriber.
    mosquitto_pub(
        b.worker_addrs[1],
        &[
            "-V", "mqttv311", "-q", "1", "-r", "-t", "imq/r", "-m", "kept",
        ],
    );
    let (mut s2, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "imq-s2", 30, true),
    );
    subscribe(&mut s2, 1, "imq/r", QoS::AtLeastOnce);
    let p = recv_publish(&mut s2, T).expect("retained");
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"kept");
}

/// Broker-to-client Topic Aliases are not exercised with mosquitto_sub: libmosquitto 2.0.11
/// answers an aliased PUBLISH with an empty topic with "protocol error"
/// (eclipse-mosquitto/mosquitto#1468); tests/delivery.rs checks them with the raw client.
#[test]
fn raw_v5_properties_reach_mosquitto_sub() {
    if !have_mosquitto() {
        return;
    }
    let b = TestBroker::start(2);
    let (mut p, _) = connect(
        b.worker_addrs[1],
        connect_packet(ProtocolVersion::V5, "imq2-p", 30, true),
    );
    let mut r = publish_packet("imq2/r", b"retained", QoS::AtLeastOnce, 1, true);
    r.properties = PublishProperties {
        content_type: Some("text/plain".into()),
        response_topic: Some("imq2/reply".into()),
        correlation_data: Some(Bytes::from_static(b"id-7")),
        user_properties: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(300),
        ..Default::default()
    };
    send_qos1(&mut p, r);
    let fmt = "%t|%q|%r|%C|%D|%F|%P|%R|%S|%A|%p";
    let mut sub = Sub::spawn(
        b.worker_addrs[0],
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "imq2/#",
            "-C",
            "3",
            "-F",
            fmt,
            "-D",
            "connect",
            "topic-alias-maximum",
            "4",
            "-D",
            "subscribe",
            "subscription-identifier",
            "5",
        ],
    );
    assert_eq!(
        sub.line(),
        "imq2/r|1|1|text/plain|id-7|1|a:1 b:2|imq2/reply|5||retained"
    );
    // Subscribed now: live messages, no properties but the subscription identifier.
    for k in 0..2u16 {
        send_qos1(
            &mut p,
            publish_packet(
                "imq2/live",
                format!("m{k}").as_bytes(),
                QoS::AtLeastOnce,
                2 + k,
                false,
            ),
        );
    }
    assert_eq!(sub.line(), "imq2/live|1|0||||||5||m0");
    assert_eq!(sub.line(), "imq2/live|1|0||||||5||m1");
    sub.finish();
}

#[test]
fn mosquitto_pub_topic_aliases_resolved_by_broker() {
    if !have_mosquitto() {
        return;
    }
    let b = TestBroker::start(2);
    let (mut s, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V311, "ita-s", 30, true),
    );
    subscribe(&mut s, 1, "ita/#", QoS::AtLeastOnce);
    // Line mode: the first PUBLISH carries the topic and alias 1, the next ones only alias 1.
    let mut child = Command::new("mosquitto_pub")
        .args(port_args(b.worker_addrs[1]))
        .args(["-V", "mqttv5", "-q", "1", "-t", "ita/one", "-l"])
        .args(["-D", "publish", "topic-alias", "1"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a\nb\nc\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let got: Vec<(String, String)> = (0..3)
        .map(|_| {
            let p = recv_publish(&mut s, T).expect("aliased message delivered");
            (
                p.topic.to_string(),
                String::from_utf8(p.payload.to_vec()).unwrap(),
            )
        })
        .collect();
    let e = |p: &str| ("ita/one".to_string(), p.to_string());
    assert_eq!(got, vec![e("a"), e("b"), e("c")]);
}

#[test]
fn mosquitto_sub_shared_subscription_members_on_different_workers() {
    if !have_mosquitto() {
        return;
    }
    let b = TestBroker::start(2);
    let (mut p, _) = connect(
        b.worker_addrs[0],
        connect_packet(ProtocolVersion::V5, "ish-p", 30, true),
    );
    for i in 0..2 {
        send_qos1(
            &mut p,
            publish_packet(
                &format!("ish-ready/{i}"),
                b"ready",
                QoS::AtLeastOnce,
                1,
                true,
            ),
        );
    }
    let n = 10u16;
    let mut subs: Vec<Sub> = (0..2)
        .map(|i| {
            let ready = format!("ish-ready/{i}");
            let v = if i == 0 { "mqttv311" } else { "mqttv5" };
            let mut s = Sub::spawn(
                b.worker_addrs[i],
                &[
                    "-V",
                    v,
                    "-q",
                    "1",
                    "-t",
                    "$share/g/ish/#",
                    "-t",
                    &ready,
                    "-v",
                    "-C",
                    &(1 + n / 2).to_string(),
                ],
            );
            assert_eq!(s.line(), format!("{ready} ready"));
            s
        })
        .collect();
    for k in 0..n {
        send_qos1(
            &mut p,
            publish_packet(
                "ish/job",
                k.to_string().as_bytes(),
                QoS::AtLeastOnce,
                2 + k,
                false,
            ),
        );
    }
    let mut all = Vec::new();
    for s in subs.iter_mut() {
        for _ in 0..n / 2 {
            let l = s.line();
            let k: u16 = l.strip_prefix("ish/job ").unwrap().parse().unwrap();
            all.push(k);
        }
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "each message to exactly one member"
    );
    for s in subs {
        s.finish();
    }
}

#[test]
fn mosquitto_retained_set_replace_delete_both_versions() {
    if !have_mosquitto() {
        return;
    }
    let b = TestBroker::start(2);
    for v in ["mqttv311", "mqttv5"] {
        let topic = format!("iret/{v}");
        for m in ["v1", "v2"] {
            mosquitto_pub(
                b.worker_addrs[1],
                &["-V", v, "-q", "1", "-r", "-t", &topic, "-m", m],
            );
        }
        let mut sub = Sub::spawn(
            b.worker_addrs[0],
            &["-V", v, "-t", &topic, "-C", "1", "-F", "%r %p"],
        );
        assert_eq!(sub.line(), "1 v2", "{v}: replaced");
        sub.finish();
        mosquitto_pub(
            b.worker_addrs[1],
            &["-V", v, "-q", "1", "-r", "-t", &topic, "-n"],
        );
        // Deleted: a new subscriber gets nothing before a live marker.
        let (mut s, _) = connect(
            b.worker_addrs[0],
            connect_packet(ProtocolVersion::V5, &format!("iret-s-{v}"), 30, true),
        );
        subscribe(&mut s, 1, &topic, QoS::AtMostOnce);
        mosquitto_pub(b.worker_addrs[1], &["-V", v, "-t", &topic, "-m", "MARK"]);
        let p = recv_publish(&mut s, T).expect("marker");
        assert_eq!(&p.payload[..], b"MARK", "{v}: retained message deleted");
        assert!(!p.retain);
    }
}

fn mosquitto_pub_status(addr: SocketAddr, args: &[&str]) -> std::process::Output {
    Command::new("mosquitto_pub")
        .args(port_args(addr))
        .args(args)
        .output()
        .unwrap()
}

/// MQTT 3.1 (`MQIsdp`, level 3; MQTT 3.1 section 3.1) with real clients: mosquitto_pub and
/// mosquitto_sub `-V mqttv31` connect, subscribe, publish QoS 0-2 and receive retained and live
/// messages (ringmq answered CONNACK 0x01 before).
#[test]
fn mosquitto_v31_clients_publish_and_subscribe() {
    if !have_mosquitto() {
        return;
    }
    let b = TestBroker::start(2);
    mosquitto_pub(
        b.worker_addrs[1],
        &[
            "-V", "mqttv31", "-i", "v31-ret", "-q", "1", "-r", "-t", "v31/t", "-m", "ret",
        ],
    );
    let mut sub = Sub::spawn(
        b.worker_addrs[0],
        &[
            "-V", "mqttv31", "-i", "v31-sub", "-q", "2", "-t", "v31/#", "-C", "4", "-F", "%t %q %p",
        ],
    );
    // Printed after SUBACK: the subscription is in place.
    assert_eq!(sub.line(), "v31/t 1 ret");
    for (q, m) in [("0", "zero"), ("1", "one"), ("2", "two")] {
        mosquitto_pub(
            b.worker_addrs[1],
            &[
                "-V", "mqttv31", "-i", "v31-pub", "-q", q, "-t", "v31/live", "-m", m,
            ],
        );
    }
    assert_eq!(sub.line(), "v31/live 0 zero");
    assert_eq!(sub.line(), "v31/live 1 one");
    assert_eq!(sub.line(), "v31/live 2 two");
    sub.finish();
}

/// MQTT 3.1 client ids: over 23 bytes accepted by default (as Mosquitto and EMQX), refused with
/// `v31_strict_client_id` (CONNACK 0x02, MQTT 3.1 section 3.2).
#[test]
fn mosquitto_v31_long_client_id_relaxed_or_strict() {
    if !have_mosquitto() {
        return;
    }
    let long = "a-client-id-of-thirty-bytes-xx";
    let args = ["-V", "mqttv31", "-i", long, "-t", "v31/id", "-m", "x"];
    let b = TestBroker::start(1);
    let out = mosquitto_pub_status(b.addr, &args);
    assert!(
        out.status.success(),
        "relaxed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = TestBroker::start_with(1, |c| c.v31_strict_client_id = true);
    let out = mosquitto_pub_status(b.addr, &args);
    assert!(!out.status.success(), "strict: refused");
    // The refusal is CONNACK 0x02 (identifier rejected), read with a raw 3.1 client.
    let mut raw = Raw::connect_tcp(b.addr, ProtocolVersion::V31);
    raw.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V31,
        long,
        30,
        true,
    ))));
    let (seen, closed) = raw.wait_closed(T);
    assert!(closed.is_some());
    assert!(
        matches!(seen.as_slice(), [Packet::ConnAck(a)] if a.code.to_v311_connack() == 0x02 && !a.session_present),
        "{seen:?}"
    );
}
