//! A tiny MQTT sink: accepts connections, answers CONNECT/SUBSCRIBE/PINGREQ and QoS
//! handshakes, discards publishes. Thread per connection; only for measuring the
//! generator's own ceiling (no broker work on the other side).

use crate::wire::get_varint;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn serve(mut s: TcpStream, count: Arc<AtomicU64>) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0usize;
    let mut v5 = false;
    let mut out = Vec::with_capacity(1024);
    loop {
        if len == buf.len() {
            let n = buf.len() * 2;
            buf.resize(n, 0);
        }
        let n = match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        len += n;
        let mut off = 0;
        let mut msgs = 0;
        while off < len {
            let Ok(Some((rl, vn))) = get_varint(&buf[off + 1..len]) else {
                if get_varint(&buf[off + 1..len]).is_err() {
                    return;
                }
                break;
            };
            let total = 1 + vn + rl;
            if off + total > len {
                break;
            }
            let first = buf[off];
            let b = &buf[off + 1 + vn..off + total];
            match first >> 4 {
                1 => {
                    v5 = b.get(6) == Some(&5);
                    if v5 {
                        out.extend_from_slice(&[0x20, 3, 0, 0, 0]);
                    } else {
                        out.extend_from_slice(&[0x20, 2, 0, 0]);
                    }
                }
                3 => {
                    msgs += 1;
                    let qos = (first >> 1) & 3;
                    if qos > 0 && b.len() >= 2 {
                        let tl = u16::from_be_bytes([b[0], b[1]]) as usize;
                        if let Some(p) = b.get(2 + tl..4 + tl) {
                            out.extend_from_slice(&[
                                if qos == 1 { 0x40 } else { 0x50 },
                                2,
                                p[0],
                                p[1],
                            ]);
                        }
                    }
                }
                6 if b.len() >= 2 => out.extend_from_slice(&[0x70, 2, b[0], b[1]]),
                8 if b.len() >= 2 => {
                    out.extend_from_slice(&[0x90, if v5 { 4 } else { 3 }, b[0], b[1]]);
                    if v5 {
                        out.push(0);
                    }
                    out.push(0);
                }
                12 => out.extend_from_slice(&[0xD0, 0]),
                14 => return,
                _ => {}
            }
            off += total;
        }
        count.fetch_add(msgs, Relaxed);
        buf.copy_within(off..len, 0);
        len -= off;
        if !out.is_empty() {
            if s.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// Run the sink until `duration` elapses. Prints received publishes per second.
pub fn run_sink(listen: &str, duration: Duration) -> std::io::Result<()> {
    let l = TcpListener::bind(listen)?;
    eprintln!("sink listening on {}", l.local_addr()?);
    let count = Arc::new(AtomicU64::new(0));
    {
        let count = count.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let c = count.clone();
                std::thread::spawn(move || serve(s, c));
            }
        });
    }
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        let c = count.load(Relaxed);
        eprintln!("sink: {} msgs/s (total {c})", c - last);
        last = c;
    }
    Ok(())
}
