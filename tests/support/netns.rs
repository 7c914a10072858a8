//! What the network-namespace tests share (`tests/halfopen.rs`, `tests/cluster_link.rs`): the
//! `ip` command, the removal of what a killed test process left behind, and the skip (or,
//! with RINGMQ_REQUIRE_NETNS=1 as `.ci/run` sets, the failure) when namespaces cannot be made.

use std::io::Write;
use std::process::{Command, Stdio};

/// Run `ip ARGS`: its output, or what went wrong.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Remove the namespaces named `{prefix}{pid}-{n}` whose test process is gone, with the
/// host ends `host_devs(pid, n)` of their veth pairs and the blackhole routes guarding their
/// blocks. The routes and host ends go first: deleting the namespace may take the pairs (and
/// with them the way to find the routes) along.
pub fn remove_stale(prefix: &str, host_devs: impl Fn(&str, &str) -> Vec<String>) {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (pid, n) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if pid.is_empty() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for dev in host_devs(pid, n) {
            let routes = ip(&["-4", "route", "show", "dev", &dev]).unwrap_or_default();
            if let Some(block) = routes.split_whitespace().next() {
                let _ = ip(&["route", "del", "blackhole", block, "metric", "4000"]);
            }
            let _ = ip(&["link", "del", &dev]);
        }
        let _ = ip(&["netns", "del", name]);
    }
}

/// Remove namespace `ns` (its processes gone) and, per veth pair, its host end and the
/// blackhole route guarding its block (`(host_dev, block)`; an empty block had none yet).
pub fn remove(ns: &str, pairs: &[(&str, &str)]) {
    let _ = ip(&["netns", "del", ns]);
    for (dev, block) in pairs {
        let _ = ip(&["link", "del", dev]);
        if !block.is_empty() {
            let _ = ip(&["route", "del", "blackhole", block, "metric", "4000"]);
        }
    }
}

/// Namespaces cannot be made (`e`): say the test is skipped, or fail it when the run
/// requires namespaces (RINGMQ_REQUIRE_NETNS=1).
pub fn cannot_create(e: &str) {
    if std::env::var("RINGMQ_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("cannot create network namespaces (RINGMQ_REQUIRE_NETNS=1): {e}");
    }
    // Straight to stderr, past libtest's capture, so the skip is visible.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: cannot create network namespaces: {e}"
    );
}
