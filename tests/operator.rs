//! The operator kit, through the ringmq binary: plain log lines (no ANSI colour codes) when
//! stderr is not a terminal, `--log-format json`, and `--check-config`.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringmq");

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run the broker with stderr into a file until it logged that it listens, stop it with
/// SIGTERM, and return the whole log.
fn log_of_a_run(name: &str, args: &[&str]) -> String {
    let dir = scratch(name);
    let log = dir.join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"])
        .args(["--workers", "1", "--no-pin"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("(WebSocket)")
    {
        assert!(Instant::now() < deadline, "the broker did not start");
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "the broker ended: {st}\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(st.success(), "exit status {st}");
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn logs_to_a_file_have_no_ansi_escape_codes() {
    let text = log_of_a_run("ansi", &[]);
    assert!(text.contains("INFO"), "{text}");
    assert!(text.contains("listening on 127.0.0.1:"), "{text}");
    assert!(text.contains("stopped"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "ESC byte in a log written to a file:\n{text:?}"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let text = log_of_a_run("json", &["--log-format", "json"]);
    assert!(!text.contains('\x1b'), "{text:?}");
    let mut listening = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        let msg = v["fields"]["message"].as_str().unwrap_or("");
        if msg.starts_with("listening on 127.0.0.1:") {
            listening += 1;
        }
    }
    assert_eq!(listening, 2, "plain and WebSocket listener:\n{text}");
}

struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check_config(toml: &str, extra: &[&str]) -> Checked {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch(&format!("check{n}"));
    let file = dir.join("ringmq.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(BIN)
        .args(["--check-config", "--config", file.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    Checked {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn check_config_accepts_a_good_file_with_a_summary() {
    let c = check_config(
        "listen = [\"127.0.0.1:1883\"]\nws_listen = [\"127.0.0.1:8080\"]\nws_path = \"/ws\"\n\
         ws_trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nworkers = 3\nlog_format = \"json\"\n",
        &[],
    );
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(c.stdout.starts_with("configuration OK"), "{}", c.stdout);
    assert!(
        c.stdout.contains("ws_listen: 127.0.0.1:8080"),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout.contains("ws_path: /ws, trusted proxies: 2"),
        "{}",
        c.stdout
    );
    assert!(c.stdout.contains("workers: 3"), "{}", c.stdout);
}

#[test]
fn check_config_names_the_bad_key_and_its_line() {
    let cases: [(&str, &str); 6] = [
        (
            "listen = [\"127.0.0.1:1883\"]\nworkers = 2\n\nno_such_key = 1\n",
            "line 4: key `no_such_key`: unknown field `no_such_key`",
        ),
        (
            "workers = 2\nmax_packet_size = \"big\"\n",
            "line 2: key `max_packet_size`: invalid type: string \"big\"",
        ),
        (
            "listen = [\"127.0.0.1:1883\"]\n[tcp_keepalive]\nidle_secs = -1\ninterval_secs = 1\ncount = 1\n",
            "line 3: key `tcp_keepalive.idle_secs`",
        ),
        (
            "ws_trusted_proxies = [\"10.0.0.0/33\"]\n",
            "line 1: key `ws_trusted_proxies`: \"10.0.0.0/33\": prefix length must be 0..=32",
        ),
        // Values serde accepts but the broker does not: the line of the key in the file.
        (
            "workers = 1\n# comment\nmax_inflight = 0\n",
            "line 3: key `max_inflight`: max_inflight must be at least 1",
        ),
        (
            "ws_path = \"mqtt\"\n",
            "line 1: key `ws_path`: ws_path must start with /",
        ),
    ];
    for (toml, want) in cases {
        let c = check_config(toml, &[]);
        assert_eq!(c.code, 2, "{toml:?}: {}", c.stderr);
        assert!(
            c.stderr.contains(want),
            "{toml:?}: want {want:?} in {:?}",
            c.stderr
        );
        assert!(c.stderr.contains("ringmq.toml"), "{}", c.stderr);
        assert!(c.stdout.is_empty(), "{}", c.stdout);
    }
    // A file the configuration names is read too.
    let c = check_config(
        "wss_listen = [\"127.0.0.1:8084\"]\ntls_cert = \"/nonexistent/cert.pem\"\n\
         tls_key = \"/nonexistent/key.pem\"\n",
        &[],
    );
    assert_eq!(c.code, 2, "{}", c.stderr);
    assert!(c.stderr.contains("/nonexistent/cert.pem"), "{}", c.stderr);
    // A bad flag value is named without a line.
    let c = check_config("workers = 1\n", &["--ws-path", "no-slash"]);
    assert_eq!(c.code, 2);
    assert!(c.stderr.contains("key `ws_path`"), "{}", c.stderr);
    assert!(!c.stderr.contains("line "), "{}", c.stderr);
}
