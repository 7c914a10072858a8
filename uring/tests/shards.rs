//! An engine holds more connections than one fixed-file table allows: with RLIMIT_NOFILE
//! lowered to 256 for this process, a server engine and a client engine each spread 700
//! loopback connections over several rings, and every connection still carries data both
//! ways and closes exactly once, even when the completion queues overflow. (Its own binary:
//! the limit is process-wide.)
use ringmq_uring::engine::{ConnId, Engine, EngineConfig, Handler, Io};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = 700;
const LIMIT: u64 = 256;

/// Small rings on purpose: closing hundreds of connections at once overflows their completion
/// queues (32 entries on the primary ring, 128 on the others), and every completion must
/// still arrive.
fn cfg() -> EngineConfig {
    EngineConfig {
        ring_entries: 8,
        buf_count: 256,
        buf_size: 2048,
        max_conns: 2 * N as u32,
        tick: Duration::from_millis(10),
        ..EngineConfig::default()
    }
}

/// Echoes whatever arrives; counts opens and closes.
struct Server {
    stop: Arc<AtomicBool>,
    opens: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    shards: Arc<AtomicUsize>,
}

impl Handler for Server {
    fn on_open(&mut self, io: &mut Io<'_>, _c: ConnId, _p: Option<SocketAddr>) {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.shards
            .fetch_max(io.stats().shards as usize, Ordering::SeqCst);
    }
    fn on_data(&mut self, io: &mut Io<'_>, c: ConnId, d: &[u8]) {
        assert!(io.send(c, d), "echo refused");
    }
    fn on_close(&mut self, _io: &mut Io<'_>, _c: ConnId, _e: Option<std::io::Error>) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
    fn on_wake(&mut self, _io: &mut Io<'_>) {}
    fn on_tick(&mut self, _io: &mut Io<'_>, _now: Instant) {}
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Opens N connections, sends each its own 8-byte id once open, checks the echo, then
/// closes them all.
struct Client {
    addr: SocketAddr,
    started: bool,
    ids: HashMap<ConnId, u64>,
    echoed: HashMap<ConnId, Vec<u8>>,
    ok: usize,
    closes: usize,
    errors: Vec<String>,
    deadline: Instant,
    closing: bool,
}

impl Handler for Client {
    fn on_open(&mut self, io: &mut Io<'_>, c: ConnId, _p: Option<SocketAddr>) {
        let id = self.ids[&c];
        assert!(io.send(c, &id.to_le_bytes()));
    }
    fn on_data(&mut self, io: &mut Io<'_>, c: ConnId, d: &[u8]) {
        let buf = self.echoed.entry(c).or_default();
        buf.extend_from_slice(d);
        if buf.len() == 8 {
            if u64::from_le_bytes(buf[..].try_into().unwrap()) == self.ids[&c] {
                self.ok += 1;
            } else {
                self.errors.push(format!("{c:?}: wrong echo"));
            }
            if self.ok == N {
                self.closing = true;
                let all: Vec<ConnId> = self.ids.keys().copied().collect();
                for c in all {
                    io.close(c);
                }
            }
        }
        let _ = io;
    }
    fn on_close(&mut self, _io: &mut Io<'_>, c: ConnId, e: Option<std::io::Error>) {
        self.closes += 1;
        if !self.closing {
            self.errors.push(format!("{c:?} closed early: {e:?}"));
        }
    }
    fn on_wake(&mut self, _io: &mut Io<'_>) {}
    fn on_tick(&mut self, io: &mut Io<'_>, now: Instant) {
        if !self.started {
            self.started = true;
            for i in 0..N as u64 {
                match io.connect(self.addr, None) {
                    Ok(c) => {
                        self.ids.insert(c, i);
                    }
                    Err(e) => self.errors.push(format!("connect {i}: {e}")),
                }
            }
        }
        if now > self.deadline {
            self.errors.push("timed out".into());
            self.closing = true;
        }
    }
    fn should_stop(&self) -> bool {
        (self.closing && self.closes == self.ids.len()) || !self.errors.is_empty()
    }
}

#[test]
fn connections_beyond_one_fixed_table_spread_over_rings() {
    let rl = libc::rlimit {
        rlim_cur: LIMIT,
        rlim_max: LIMIT.max(current_hard_limit()),
    };
    // SAFETY: setrlimit reads the struct we pass; lowering the soft limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (opens, closes, shards) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut srv = Engine::new(cfg()).unwrap();
    assert!(srv.fixed_table_size() <= LIMIT as u32);
    srv.listen(l).unwrap();
    let mut sh = Server {
        stop: stop.clone(),
        opens: opens.clone(),
        closes: closes.clone(),
        shards: shards.clone(),
    };
    let server = std::thread::spawn(move || srv.run(&mut sh).unwrap());

    let mut cli = Engine::new(cfg()).unwrap();
    let mut ch = Client {
        addr,
        started: false,
        ids: HashMap::new(),
        echoed: HashMap::new(),
        ok: 0,
        closes: 0,
        errors: Vec::new(),
        deadline: Instant::now() + Duration::from_secs(60),
        closing: false,
    };
    cli.run(&mut ch).unwrap();
    let client_shards = cli.stats().shards;

    let t = Instant::now();
    while closes.load(Ordering::SeqCst) < N && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();

    assert!(
        ch.errors.is_empty(),
        "{:?}",
        &ch.errors[..ch.errors.len().min(5)]
    );
    assert_eq!(ch.ok, N, "every connection echoed its id");
    assert_eq!(ch.closes, N, "every client connection closed once");
    assert_eq!(opens.load(Ordering::SeqCst), N);
    assert_eq!(
        closes.load(Ordering::SeqCst),
        N,
        "every server connection closed once"
    );
    // 700 connections with tables of at most 256 entries: at least three rings each side.
    assert!(
        shards.load(Ordering::SeqCst) >= 3,
        "server shards {shards:?}"
    );
    assert!(client_shards >= 3, "client shards {client_shards}");
}

fn current_hard_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    rl.rlim_max
}
