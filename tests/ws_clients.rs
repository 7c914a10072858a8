//! Real WebSocket clients against the ringmq binary (started on ephemeral loopback ports,
//! its addresses read from its log):
//! - paho-mqtt (PyPI) with `transport="websockets"`, MQTT 3.1.1 and 5, ws:// and wss://;
//! - MQTT.js (npm `mqtt`, installed in tests/js/) in Node, ws:// and wss://;
//! - MQTT.js in headless Chromium: the test serves a page and the MQTT.js browser bundle over
//!   HTTP on loopback, the page connects to ringmq over ws:// and posts its result back.
//!
//! Each client subscribes, publishes QoS 0 and QoS 1 to itself and must receive both (and
//! the PUBACK). `.ci/run` installs the tools; with `CI` set a missing tool fails the test,
//! otherwise the test prints SKIP and passes.
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

const T: Duration = Duration::from_secs(30);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether a tool the test needs is there: with `CI` set its absence fails the test.
fn have(tool: &str, probe: &mut Command, install: &str) -> bool {
    let ok = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !in_ci(),
            "{tool} is missing in CI ({install}; .ci/run installs it)"
        );
        eprintln!("SKIP: {tool} not available ({install})");
    }
    ok
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

fn python() -> String {
    std::env::var("RINGMQ_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn have_paho() -> bool {
    have(
        "paho-mqtt",
        Command::new(python()).args(["-c", "import paho.mqtt.client"]),
        "pip install paho-mqtt",
    )
}

fn have_mqttjs() -> bool {
    have(
        "MQTT.js in Node",
        Command::new("node")
            .args(["-e", "require('mqtt')"])
            .current_dir(js_dir()),
        "apt-get install nodejs npm; npm install --prefix tests/js",
    )
}

// --- the broker binary ----------------------------------------------------------------------

struct Broker {
    child: Child,
    ws: Option<SocketAddr>,
    wss: Option<SocketAddr>,
}

impl Broker {
    /// Start `ringmq` on 127.0.0.1 port 0 with `args`; wait for its "listening on" lines.
    fn start(args: &[&str]) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["--listen", "127.0.0.1:0", "--workers", "2", "--no-pin"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Drains the log for the broker's whole life (a full pipe would stall it).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let wants_wss = args.contains(&"--wss-listen");
        let (mut ws, mut wss) = (None, None);
        let deadline = Instant::now() + T;
        while ws.is_none() || (wants_wss && wss.is_none()) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("broker started in time");
            let line = rx.recv_timeout(left).expect("a broker log line");
            let addr = || -> SocketAddr {
                let a = line.split("listening on ").nth(1).unwrap();
                a.split(' ').next().unwrap().parse().unwrap()
            };
            if line.contains("(WebSocket over TLS)") {
                wss = Some(addr());
            } else if line.contains("(WebSocket)") {
                ws = Some(addr());
            }
        }
        Broker { child, ws, wss }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SIGTERM, then a bounded wait; SIGKILL if it did not stop.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                if !std::thread::panicking() {
                    assert!(st.success(), "broker exit status {st}");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            panic!("broker did not stop on SIGTERM");
        }
    }
}

/// Run a client to completion (bounded by `T`), returning its stdout lines.
fn run_client(cmd: &mut Command) -> Vec<String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (o.join().unwrap(), e.join().unwrap());
    match status {
        Some(st) if st.success() => out.lines().map(str::to_owned).collect(),
        Some(st) => panic!("{cmd:?} exit {st}\nstdout:\n{out}\nstderr:\n{err}"),
        None => panic!("{cmd:?} did not finish in time\nstdout:\n{out}\nstderr:\n{err}"),
    }
}

/// The client's lines hold both messages, the PUBACK and the clean end.
fn assert_round_trip(lines: &[String], prefix: &str) {
    let all = lines.join("\n");
    for want in [
        format!("MSG {prefix}/zero q0 0"),
        format!("MSG {prefix}/one q1 1"),
        "PUBACK".to_owned(),
        "DONE".to_owned(),
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{all}");
    }
}

// --- certificates for wss -------------------------------------------------------------------

/// A CA and a server certificate for 127.0.0.1 / localhost, generated once per run.
fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ws-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "ringmq ws test CA");
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        dir
    })
}

fn wss_broker() -> Broker {
    let dir = pki();
    Broker::start(&[
        "--ws-listen",
        "127.0.0.1:0",
        "--wss-listen",
        "127.0.0.1:0",
        "--tls-cert",
        dir.join("server.pem").to_str().unwrap(),
        "--tls-key",
        dir.join("server.key").to_str().unwrap(),
    ])
}

// --- paho-mqtt ------------------------------------------------------------------------------

fn paho(addr: SocketAddr, version: &str, ca: Option<&Path>) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/paho_ws.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args([addr.ip().to_string(), addr.port().to_string()])
        .args(["/mqtt", version]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    run_client(&mut cmd)
}

#[test]
fn paho_over_websocket_v311_and_v5() {
    if !have_paho() {
        return;
    }
    let b = Broker::start(&["--ws-listen", "127.0.0.1:0"]);
    for v in ["4", "5"] {
        let lines = paho(b.ws.unwrap(), v, None);
        assert_round_trip(&lines, "paho");
        assert!(lines.contains(&"CONNACK Success".to_owned()), "{lines:?}");
        assert!(lines.contains(&"SUBACK 1".to_owned()), "{lines:?}");
    }
}

#[test]
fn paho_over_websocket_over_tls() {
    if !have_paho() {
        return;
    }
    let b = wss_broker();
    let lines = paho(b.wss.unwrap(), "5", Some(&pki().join("ca.pem")));
    assert_round_trip(&lines, "paho");
    // The plain WebSocket listener beside it still works.
    assert_round_trip(&paho(b.ws.unwrap(), "4", None), "paho");
}

// --- MQTT.js in Node ------------------------------------------------------------------------

fn mqttjs(url: &str, version: &str, ca: Option<&Path>) -> Vec<String> {
    let mut cmd = Command::new("node");
    cmd.current_dir(js_dir())
        .arg("ws_client.js")
        .args([url, version]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    run_client(&mut cmd)
}

#[test]
fn mqttjs_in_node_over_websocket() {
    if !have_mqttjs() {
        return;
    }
    let b = wss_broker();
    for v in ["4", "5"] {
        let lines = mqttjs(&format!("ws://{}/mqtt", b.ws.unwrap()), v, None);
        assert_round_trip(&lines, "mqttjs");
        assert!(lines.contains(&"SUBACK 1".to_owned()), "{lines:?}");
    }
    let ca = pki().join("ca.pem");
    let lines = mqttjs(&format!("wss://{}/mqtt", b.wss.unwrap()), "5", Some(&ca));
    assert_round_trip(&lines, "mqttjs");
}

// --- MQTT.js in headless Chromium -----------------------------------------------------------

/// Serve the test page and the MQTT.js bundle on loopback until `stop`; the page's POST to
/// /result is sent on `result`.
fn serve_page(listener: TcpListener, stop: Arc<AtomicBool>, result: mpsc::Sender<String>) {
    listener.set_nonblocking(true).unwrap();
    let page = std::fs::read(js_dir().join("browser.html")).unwrap();
    let bundle = std::fs::read(js_dir().join("node_modules/mqtt/dist/mqtt.min.js")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let Some((head, body)) = read_request(&mut s) else {
            continue;
        };
        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
        let path = target.split('?').next().unwrap_or("");
        let (status, ctype, content): (&str, &str, &[u8]) = match (head.split(' ').next(), path) {
            (Some("GET"), "/index.html") => ("200 OK", "text/html; charset=utf-8", &page),
            (Some("GET"), "/mqtt.min.js") => ("200 OK", "text/javascript", &bundle),
            (Some("POST"), "/result") => {
                let _ = result.send(String::from_utf8_lossy(&body).into_owned());
                ("200 OK", "text/plain", b"")
            }
            _ => ("404 Not Found", "text/plain", b""),
        };
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            content.len()
        );
        let _ = s.write_all(content);
    }
}

/// One HTTP request: its head and its body (by Content-Length).
fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut tmp).ok().filter(|&n| n > 0)?;
        body.extend_from_slice(&tmp[..n]);
    }
    Some((head, body))
}

#[test]
fn mqttjs_in_headless_chromium_over_websocket() {
    if !have_mqttjs()
        || !have(
            "chromium",
            Command::new("chromium").arg("--version"),
            "apt-get install chromium",
        )
    {
        return;
    }
    let b = Broker::start(&["--ws-listen", "127.0.0.1:0"]);
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || serve_page(http, stop, tx))
    };
    let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chromium-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let url = format!(
        "http://{http_addr}/index.html?broker=ws://{}/mqtt",
        b.ws.unwrap()
    );
    // Its own process group, so that the browser and its helpers end together.
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let result = rx.recv_timeout(Duration::from_secs(90));
    unsafe { libc::kill(-(chromium.id() as i32), libc::SIGKILL) };
    let _ = chromium.wait();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let result = result.expect("the page reported a result");
    assert_eq!(
        result, "OK MSG browser/one q1 1;MSG browser/zero q0 0;PUBACK",
        "the page's result"
    );
}
