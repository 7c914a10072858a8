#!/usr/bin/env python3
"""Create N persistent MQTT 3.1.1 sessions (Clean Session 0) with S subscriptions each on a
broker, then leave them offline: the state a restart must load back.

    scripts/persist-sessions.py HOST PORT N [S=10] [THREADS=8]

Each client: CONNECT (client id dev-<i>), one SUBSCRIBE with S filters at QoS 1
(fleet/<i % 1000>/dev/<i>/cmd/<f>), wait for SUBACK, DISCONNECT. Prints sessions per second.
Any broker; no third-party modules (raw sockets).
"""
import socket
import struct
import sys
import threading
import time


def rl(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(x):
    b = x.encode()
    return struct.pack("!H", len(b)) + b


def connect(cid):
    var = s("MQTT") + bytes([4, 0x00]) + struct.pack("!H", 600)  # clean session 0
    body = var + s(cid)
    return bytes([0x10]) + rl(len(body)) + body


def subscribe(i, subs):
    body = struct.pack("!H", 1)
    for f in range(subs):
        body += s(f"fleet/{i % 1000}/dev/{i}/cmd/{f}") + bytes([1])
    return bytes([0x82]) + rl(len(body)) + body


def read_packet(sock, buf):
    while True:
        if len(buf) >= 2:
            mult, n, k = 1, 0, 1
            while k < len(buf):
                b = buf[k]
                n += (b & 0x7F) * mult
                mult *= 128
                k += 1
                if not b & 0x80:
                    if len(buf) >= k + n:
                        p = bytes(buf[: k + n])
                        del buf[: k + n]
                        return p
                    break
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("closed")
        buf.extend(d)


def worker(host, port, ids, subs, errors):
    for i in ids:
        try:
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray()
            sock.sendall(connect(f"dev-{i:08d}"))
            p = read_packet(sock, buf)
            if p[0] != 0x20 or p[3] != 0:
                raise RuntimeError(f"CONNACK {p!r}")
            sock.sendall(subscribe(i, subs))
            p = read_packet(sock, buf)
            if p[0] != 0x90:
                raise RuntimeError(f"SUBACK {p!r}")
            sock.sendall(b"\xe0\x00")
            sock.close()
        except Exception as e:  # noqa: BLE001 (counted and reported)
            errors.append(f"{i}: {e}")


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    subs = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    errors = []
    t0 = time.time()
    ts = [
        threading.Thread(target=worker, args=(host, port, range(t, n, threads), subs, errors))
        for t in range(threads)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.time() - t0
    print(f"{n} sessions x {subs} subscriptions in {dt:.1f} s ({n / dt:.0f}/s), {len(errors)} errors")
    for e in errors[:5]:
        print("  error", e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
