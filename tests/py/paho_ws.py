"""paho-mqtt over WebSocket for tests/ws_clients.rs:

    python3 paho_ws.py HOST PORT PATH PROTOCOL_VERSION [CA_FILE]

Subscribes to paho/# (QoS 1), publishes one QoS 0 and one QoS 1 message to it and prints
"CONNACK ..", "SUBACK ..", "PUBACK", one "MSG topic payload qos" line per message received,
then "DONE" after a clean disconnect. With CA_FILE, the WebSocket runs over TLS (wss).
Every wait is bounded (10 s); a failure exits non-zero.
"""
import sys
import threading

import paho.mqtt.client as mqtt

host, port, path, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ca = sys.argv[5] if len(sys.argv) > 5 else None
WAIT = 10

client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id=f"paho-{version}-{'wss' if ca else 'ws'}",
    transport="websockets",
    protocol=mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311,
)
client.ws_set_options(path=path)
if ca:
    client.tls_set(ca_certs=ca)

connected = threading.Event()
subscribed = threading.Event()
received = threading.Event()
messages = []
lock = threading.Lock()


def on_connect(c, userdata, flags, reason_code, properties):
    print(f"CONNACK {reason_code}", flush=True)
    if reason_code.is_failure:
        return
    connected.set()
    c.subscribe("paho/#", qos=1)


def on_subscribe(c, userdata, mid, reason_codes, properties):
    print("SUBACK " + ",".join(str(r.value) for r in reason_codes), flush=True)
    subscribed.set()


def on_message(c, userdata, msg):
    line = f"MSG {msg.topic} {msg.payload.decode()} {msg.qos}"
    print(line, flush=True)
    with lock:
        messages.append(line)
        if len(messages) == 2:
            received.set()


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message


def fail(why):
    print(f"FAIL {why}", flush=True)
    sys.exit(1)


client.connect(host, port, keepalive=30)
client.loop_start()
if not subscribed.wait(WAIT):
    fail("no SUBACK")
client.publish("paho/zero", "q0", qos=0)
info = client.publish("paho/one", "q1", qos=1)
info.wait_for_publish(WAIT)
if not info.is_published():
    fail("no PUBACK")
print("PUBACK", flush=True)
if not received.wait(WAIT):
    fail(f"messages: {messages}")
client.disconnect()
client.loop_stop()
print("DONE", flush=True)
