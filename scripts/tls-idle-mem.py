#!/usr/bin/env python3
"""Broker memory per idle connection, plain vs TLS.

    scripts/tls-idle-mem.py BROKER_PID PLAIN_PORT TLS_PORT CA_PEM [N]

Opens N (default 2000) MQTT 3.1.1 connections (CONNECT, wait for CONNACK, keep-alive 0) to the
plain port, reads the broker's RSS (VmRSS) before and after, closes them; then the same on the
TLS port (full handshake, verified against CA_PEM). Prints bytes per connection for each.
Loopback only; every socket has a 10 s timeout.
"""
import socket
import ssl
import sys
import time


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


def open_all(port, n, ctx):
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        s.sendall(connect_packet(i))
        ack = b""
        while len(ack) < 4:
            chunk = s.recv(4 - len(ack))
            if not chunk:
                raise RuntimeError("closed before CONNACK")
            ack += chunk
        assert ack[0] == 0x20 and ack[3] == 0, ack
        socks.append(s)
    return socks


def measure(pid, port, n, ctx):
    time.sleep(0.5)
    before = rss(pid)
    socks = open_all(port, n, ctx)
    time.sleep(0.5)
    after = rss(pid)
    for s in socks:
        s.close()
    time.sleep(1.0)
    return (after - before) / n


def main():
    pid, plain, tls, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
    ctx = ssl.create_default_context(cafile=ca)
    # Warm-up (allocator arenas, tables) so the first measurement is not penalised.
    measure(pid, plain, 200, None)
    measure(pid, tls, 200, ctx)
    p = measure(pid, plain, n, None)
    t = measure(pid, tls, n, ctx)
    print(f"{n} idle connections: plain {p:.0f} B/conn, TLS {t:.0f} B/conn (broker RSS delta)")


if __name__ == "__main__":
    main()
