#!/usr/bin/env bash
# Host tuning for big ringmq / ringmq-load runs (100k+ connections). Needs root.
# Not needed for `cargo test`. Prints each setting; pass --dry-run to only print.
set -euo pipefail
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

set_sysctl() {
    local key=$1 val=$2
    echo "sysctl -w $key=\"$val\""
    if [[ $DRY == 0 ]]; then
        sysctl -q -w "$key=$val" || echo "  (failed: $key not writable here, e.g. inside a container)" >&2
    fi
}

# Ephemeral ports for outgoing connections. Each (src ip, dst ip, dst port) tuple can use
# every port in this range once; the default 32768-60999 (~28k) caps one source address
# to ~28k connections per broker port. Use --source 127.0.0.2-127.0.0.50 for more.
set_sysctl net.ipv4.ip_local_port_range "1024 65535"

# Accept queue length cap for listen(); bursts of thousands of connects per second
# overflow the default (4096) and show up as SYN retries (1 s, 3 s connect latency).
set_sysctl net.core.somaxconn 65535

# Half-open (SYN_RECV) queue; same reason as somaxconn for connection storms.
set_sysctl net.ipv4.tcp_max_syn_backlog 65535

# TCP memory in pages (min, pressure, max) for the whole host. 100k sockets with a few KB
# of buffers each needs far more than the default pressure threshold on small machines,
# else the kernel starts shrinking buffers / dropping.
set_sysctl net.ipv4.tcp_mem "786432 1048576 1572864"

# Per-process ceiling for RLIMIT_NOFILE (what `ulimit -n` may be raised to).
# The broker holds one fd per connection (plus the generator, unless it uses
# io_uring fixed files as ringmq-load does).
set_sysctl fs.nr_open 2097152

# System-wide limit of open files across all processes.
set_sysctl fs.file-max 4194304

# Reuse TIME_WAIT sockets for new outgoing connections (reconnect storms from the generator).
set_sysctl net.ipv4.tcp_tw_reuse 1

# Then raise the shell's open-file limit before starting the broker:
echo "ulimit -n 1048576   # run in the shell that starts the broker (needs nr_open >= this)"
