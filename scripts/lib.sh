# Helpers the benchmark scripts share; sourced from the repository root (`. scripts/lib.sh`).

# A loopback port free right now (the broker binds it right after).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# utime + stime of a pid, in clock ticks (fields after the command name, which may hold
# spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'; }

# Wait up to 5 s for a listener on loopback port $1.
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
