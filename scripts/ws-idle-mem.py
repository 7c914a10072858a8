#!/usr/bin/env python3
"""Broker memory per idle connection, plain vs WebSocket.

    scripts/ws-idle-mem.py BROKER_PID PLAIN_PORT WS_PORT [N [ws-first]]

Opens N (default 2000) MQTT 3.1.1 connections (CONNECT, wait for CONNACK, keep-alive 0) to the
plain port, reads the broker's RSS (VmRSS) before and after, closes them; then the same on the
WebSocket port (HTTP upgrade to /mqtt, subprotocol mqtt, the CONNECT in one masked binary
frame); `ws-first` measures the WebSocket port first. Prints bytes per connection for each.
Run it on a fresh broker each time: memory the allocator kept from an earlier round hides the
next round's growth. Loopback only; every socket has a 10 s timeout.
"""
import socket
import sys
import time

UPGRADE = (
    b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
)


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def connect_packet(i):
    cid = f"idle-{i}".encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x00"  # 3.1.1, clean session, keep-alive 0
    payload = len(cid).to_bytes(2, "big") + cid
    body = var + payload
    return bytes([0x10, len(body)]) + body


def ws_frame(payload):
    mask = b"\x11\x22\x33\x44"
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise RuntimeError("closed early")
        data += chunk
    return data


def open_all(port, n, ws):
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if ws:
            s.sendall(UPGRADE)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += recv_exact(s, 1)
            assert head.startswith(b"HTTP/1.1 101 "), head
            s.sendall(ws_frame(connect_packet(i)))
            frame = recv_exact(s, 2)
            assert frame == b"\x82\x04", frame
        else:
            s.sendall(connect_packet(i))
        ack = recv_exact(s, 4)
        assert ack[0] == 0x20 and ack[3] == 0, ack
        socks.append(s)
    return socks


def measure(pid, port, n, ws):
    time.sleep(0.5)
    before = rss(pid)
    socks = open_all(port, n, ws)
    time.sleep(0.5)
    after = rss(pid)
    for s in socks:
        s.close()
    time.sleep(1.0)
    return (after - before) / n


def main():
    pid, plain, ws = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    # Warm-up (allocator arenas, tables) so the first measurement is not penalised.
    measure(pid, plain, 200, False)
    measure(pid, ws, 200, True)
    if len(sys.argv) > 5 and sys.argv[5] == "ws-first":
        w = measure(pid, ws, n, True)
        p = measure(pid, plain, n, False)
    else:
        p = measure(pid, plain, n, False)
        w = measure(pid, ws, n, True)
    print(f"{n} idle connections: plain {p:.0f} B/conn, WebSocket {w:.0f} B/conn (broker RSS delta)")


if __name__ == "__main__":
    main()
