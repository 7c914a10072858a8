#!/usr/bin/env bash
# Soak test (issue 7, not part of cargo test). Bounded in time: stops by itself after DURATION.
#
# Runs one ringmq broker with WORKERS workers and, for DURATION seconds, drives it with the
# bundled generator (loopback only, 127.0.0.0/8):
#   held     CONNS idle connections, keep-alive KEEPALIVE s (the generator sends PINGREQ at half
#            of it), --reconnect (a connection the broker drops comes back and is counted);
#   churn    repeated short-lived `conn` runs of CHURN clients (held CHURN_HOLD s, then closed,
#            CHURN_PAUSE s apart), rotating MQTT 5 clean / 3.1.1 clean / MQTT 5 persistent
#            session (clean=false, session expiry CHURN_EXPIRY s, own client ids, so the
#            offline sessions are kept, then expire);
#   takeover a `takeover` storm of TAKEOVER client ids (TAKEOVER connect, then TAKEOVER more
#            with the same ids at once) every TAKEOVER_EVERY s;
#   qos1     `pubsub --mode p2p --qos QOS` with PAIRS publisher/subscriber pairs at PUB_RATE
#            msg/s for the whole duration (the generator counts lost and duplicate messages
#            and exits 2 on loss at QoS >= 1).
# Every SAMPLE s it records broker VmRSS, CPU ticks (utime+stime), connections (Prometheus
# gauge and `ss`) and every Prometheus counter into $OUT/soak.csv; at the end it writes
# $OUT/summary.txt: RSS at the steady-state reference (first sample at or after STEADY s) vs
# the last sample under load (flat = end <= RSS_TOL_PCT % of the reference), QoS loss,
# duplicates, every error counter, generator-side totals. Exit 0 = all checks passed.
#
# Usage: [DURATION=1800] [CONNS=50000] [WORKERS=4] ... scripts/soak.sh
# Every process runs under `nice -n $NICE` (default 19); run the script itself un-niced (a
# `nice -n 10` around it adds to NICE). Results of the recorded run: docs/soak.md.
# Short validation run: DURATION=120 CONNS=5000 CHURN=500 TAKEOVER=500 TAKEOVER_EVERY=30 \
#                       PUB_RATE=500 scripts/soak.sh
# Limits here: 20,000 open files per process, not raisable. ringmq keeps connections in
# io_uring fixed-file tables (one per worker, <= 20,000 entries), so 50k connections need
# --workers 4 or more; the generator holds them in one fixed table per thread, so held
# connections / CONN_THREADS must stay below 20,000.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

DURATION=${DURATION:-1800}          # seconds of load (ramp included)
SAMPLE=${SAMPLE:-30}                # sampling period, seconds
STEADY=${STEADY:-$((DURATION / 6 < 300 ? DURATION / 6 : 300))} # RSS reference time, seconds
RSS_TOL_PCT=${RSS_TOL_PCT:-110}     # flat: end RSS <= this % of the reference RSS
WORKERS=${WORKERS:-4}
MAX_CONN_PER_WORKER=${MAX_CONN_PER_WORKER:-19000}
CONNS=${CONNS:-50000}
KEEPALIVE=${KEEPALIVE:-10}
RAMP=${RAMP:-2000}                  # held connections per second while ramping up
CONN_THREADS=${CONN_THREADS:-$(((CONNS + 14999) / 15000))}
CHURN=${CHURN:-2000}
CHURN_HOLD=${CHURN_HOLD:-10}
CHURN_PAUSE=${CHURN_PAUSE:-5}
CHURN_EXPIRY=${CHURN_EXPIRY:-20}
TAKEOVER=${TAKEOVER:-3000}
TAKEOVER_EVERY=${TAKEOVER_EVERY:-60}
TAKEOVER_HOLD=${TAKEOVER_HOLD:-12}
PAIRS=${PAIRS:-100}
PUB_RATE=${PUB_RATE:-2000}
QOS=${QOS:-1}
SIZE=${SIZE:-64}
PORT=${PORT:-18861}
METRICS_PORT=${METRICS_PORT:-18862}
NICE=${NICE:-19}
OUT=${OUT:-target/soak}
RINGMQ=${RINGMQ_BIN:-target/release/ringmq}
LOAD=${LOAD_BIN:-target/release/ringmq-load}
SRC_HELD=127.0.0.2-127.0.0.41
SRC_CHURN=127.0.0.42-127.0.0.61
SRC_TAKEOVER=127.0.0.62-127.0.0.81
SRC_PUBSUB=127.0.0.82-127.0.0.85

for b in "$RINGMQ" "$LOAD"; do
    [[ -x $b ]] || { echo "missing $b: nice -n 19 cargo build --release --workspace" >&2; exit 1; }
done
for v in DURATION SAMPLE STEADY RSS_TOL_PCT WORKERS CONNS KEEPALIVE CONN_THREADS CHURN CHURN_HOLD \
    CHURN_PAUSE TAKEOVER TAKEOVER_EVERY TAKEOVER_HOLD PAIRS PUB_RATE QOS PORT METRICS_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a non-negative integer (got '${!v}')" >&2; exit 1; }
done
((DURATION >= 60 && SAMPLE >= 1)) || { echo "DURATION must be >= 60 s" >&2; exit 1; }
if ((CONNS / (CONN_THREADS > 0 ? CONN_THREADS : 1) >= 20000)); then
    echo "CONNS / CONN_THREADS must stay below 20,000 (open-file limit per io_uring table)" >&2
    exit 1
fi
for p in "$PORT" "$METRICS_PORT"; do
    if [[ -n $(ss -Htln "( sport = :$p )") ]]; then
        echo "port $p is in use; set PORT / METRICS_PORT" >&2
        exit 1
    fi
done

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.csv "$OUT"/*.txt "$OUT"/metrics.*
CSV=$OUT/soak.csv
SUMMARY=$OUT/summary.txt
TCK=$(getconf CLK_TCK)

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/soak.log" >&2; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
. scripts/lib.sh # free_port, cpu_ticks, wait_port
established() { ss -Htn state established "( sport = :$PORT )" | wc -l; }
scrape() { # -> "name value" lines (ringmq_ prefix stripped), empty on failure
    curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
        awk '$1 ~ /^ringmq_/ && NF == 2 {sub(/^ringmq_/, "", $1); print $1, $2}'
}
metric() { awk -v k="$2" '$1 == k {print $2}' "$1"; } # file name
jget() { # json-file key -> value or "?"
    jq -r --arg k "$2" '.[$k] // "?"' "$1" 2>/dev/null || echo "?"
}
alive() { kill -0 "$1" 2>/dev/null; }

# ---- broker
log "ringmq: workers=$WORKERS max_conn_per_worker=$MAX_CONN_PER_WORKER port=$PORT metrics=$METRICS_PORT"
nice -n "$NICE" "$RINGMQ" --listen "127.0.0.1:$PORT" --workers "$WORKERS" \
    --max-connections-per-worker "$MAX_CONN_PER_WORKER" \
    --metrics-listen "127.0.0.1:$METRICS_PORT" >"$OUT/ringmq.log" 2>&1 &
BROKER=$!
PIDS+=("$BROKER")
for _ in $(seq 1 100); do
    [[ -n $(scrape) ]] && break
    sleep 0.1
done
[[ -n $(scrape) ]] || { log "broker did not start (see $OUT/ringmq.log)"; exit 1; }

T0=$(date +%s)
T_END=$((T0 + DURATION))
{
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host=$(uname -srm) cpus=$(nproc) mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    echo "git=$(git rev-parse --short HEAD 2>/dev/null || echo ?)"
    echo "params: DURATION=$DURATION SAMPLE=$SAMPLE STEADY=$STEADY RSS_TOL_PCT=$RSS_TOL_PCT" \
        "WORKERS=$WORKERS CONNS=$CONNS KEEPALIVE=$KEEPALIVE RAMP=$RAMP CONN_THREADS=$CONN_THREADS" \
        "CHURN=$CHURN CHURN_HOLD=$CHURN_HOLD CHURN_PAUSE=$CHURN_PAUSE CHURN_EXPIRY=$CHURN_EXPIRY" \
        "TAKEOVER=$TAKEOVER TAKEOVER_EVERY=$TAKEOVER_EVERY TAKEOVER_HOLD=$TAKEOVER_HOLD" \
        "PAIRS=$PAIRS PUB_RATE=$PUB_RATE QOS=$QOS SIZE=$SIZE NICE=$NICE"
} >"$OUT/params.txt"

# ---- sampler (one CSV row)
HEADER_DONE=0
PREV_T=$T0
PREV_CPU=0
sample() { # phase
    local now rss cpu pct conns_ss m="$OUT/metrics.last"
    now=$(date +%s)
    rss=$(rss_kib "$BROKER")
    cpu=$(cpu_ticks "$BROKER")
    [[ -n $rss && -n $cpu ]] || { log "broker process is gone"; return 1; }
    scrape >"$m"
    conns_ss=$(established)
    pct=$(awk -v a="$PREV_CPU" -v b="$cpu" -v t="$TCK" -v d="$((now - PREV_T))" \
        'BEGIN {printf "%.1f", (d > 0 ? (b - a) / t / d * 100 : 0)}')
    if ((HEADER_DONE == 0)); then
        printf 't_s,phase,rss_kib,cpu_ticks,cpu_pct,conns_ss,%s\n' "$(awk '{print $1}' "$m" | paste -sd, -)" >"$CSV"
        HEADER_DONE=1
    fi
    printf '%s,%s,%s,%s,%s,%s,%s\n' "$((now - T0))" "$1" "$rss" "$cpu" "$pct" "$conns_ss" \
        "$(awk '{print $2}' "$m" | paste -sd, -)" >>"$CSV"
    PREV_T=$now
    PREV_CPU=$cpu
    log "t=$((now - T0))s phase=$1 rss=${rss}KiB cpu=${pct}% conns=$(metric "$m" connections_current)/ss:$conns_ss" \
        "sessions=$(metric "$m" sessions_current) takeovers=$(metric "$m" takeovers) publish_in=$(metric "$m" publish_in)"
}
sample idle

# ---- load
log "held: $CONNS connections, keep-alive ${KEEPALIVE}s, ramp ${RAMP}/s, $CONN_THREADS generator threads"
nice -n "$NICE" "$LOAD" conn --host 127.0.0.1 --port "$PORT" --clients "$CONNS" --ramp "$RAMP" \
    --keepalive "$KEEPALIVE" --reconnect --source "$SRC_HELD" --prefix soak-held- \
    --threads "$CONN_THREADS" --duration "$((DURATION + 120))s" --quiet \
    --json "$OUT/held.json" >"$OUT/held.log" 2>&1 &
HELD=$!
PIDS+=("$HELD")

log "qos$QOS: $PAIRS pairs, ${PUB_RATE} msg/s, ${SIZE} B"
nice -n "$NICE" "$LOAD" pubsub --mode p2p --host 127.0.0.1 --port "$PORT" --clients "$PAIRS" \
    --qos "$QOS" --rate "$PUB_RATE" --size "$SIZE" --keepalive "$KEEPALIVE" --ramp 500 \
    --source "$SRC_PUBSUB" --prefix soak-ps- --duration "${DURATION}s" --drain 15s --quiet \
    --json "$OUT/pubsub.json" >"$OUT/pubsub.log" 2>&1 &
PUBSUB=$!
PIDS+=("$PUBSUB")

churn_loop() { # bounded: at most DURATION / (hold + pause) + 1 runs, none past T_END
    local i=0 max=$((DURATION / (CHURN_HOLD + CHURN_PAUSE) + 1)) extra rc
    sleep 5
    while ((i < max)) && (($(date +%s) + CHURN_HOLD + 5 < T_END)); do
        # persistent sessions get their own ids: nothing claims them, so they expire
        case $((i % 3)) in
            0) extra=(--version 5 --prefix soak-churn-) ;;
            1) extra=(--version 3.1.1 --prefix soak-churn-) ;;
            *) extra=(--version 5 --clean false --session-expiry "$CHURN_EXPIRY" --prefix soak-churnp-) ;;
        esac
        nice -n "$NICE" "$LOAD" conn --host 127.0.0.1 --port "$PORT" --clients "$CHURN" \
            --ramp "$((CHURN / 2 > 0 ? CHURN / 2 : 1))" --keepalive "$KEEPALIVE" "${extra[@]}" \
            --source "$SRC_CHURN" --duration "${CHURN_HOLD}s" --quiet \
            --json "$OUT/churn-$i.json" >>"$OUT/churn.log" 2>&1
        rc=$?
        echo "churn $i ${extra[*]} rc=$rc" >>"$OUT/runs.log"
        i=$((i + 1))
        sleep "$CHURN_PAUSE"
    done
}
takeover_loop() { # bounded: at most DURATION / TAKEOVER_EVERY + 1 storms, none past T_END
    local i=0 max=$((DURATION / TAKEOVER_EVERY + 1)) next rc
    next=$((T0 + 10 + CONNS / (RAMP > 0 ? RAMP : 1000))) # first storm after the ramp-up
    while ((i < max)) && ((next + TAKEOVER_HOLD + 5 < T_END)); do
        while (($(date +%s) < next)); do sleep 1; done
        nice -n "$NICE" "$LOAD" takeover --host 127.0.0.1 --port "$PORT" --clients "$TAKEOVER" \
            --ramp "$((TAKEOVER * 2))" --keepalive "$KEEPALIVE" --source "$SRC_TAKEOVER" \
            --prefix soak-tko- --duration "${TAKEOVER_HOLD}s" --quiet \
            --json "$OUT/takeover-$i.json" >>"$OUT/takeover.log" 2>&1
        rc=$?
        echo "takeover $i rc=$rc" >>"$OUT/runs.log"
        i=$((i + 1))
        next=$((next + TAKEOVER_EVERY))
    done
}
if ((CHURN > 0)); then
    churn_loop &
    CHURN_PID=$!
    PIDS+=("$CHURN_PID")
fi
if ((TAKEOVER > 0)); then
    takeover_loop &
    TKO_PID=$!
    PIDS+=("$TKO_PID")
fi

# ---- sampling until T_END (bounded by count and time)
BROKER_DIED=0
for _ in $(seq 1 $((DURATION / SAMPLE + 2))); do
    now=$(date +%s)
    ((now >= T_END)) && break
    left=$((T_END - now))
    sleep $((left < SAMPLE ? left : SAMPLE))
    now=$(date +%s)
    ((now >= T_END)) && break
    sample load || { BROKER_DIED=1; break; }
done
if ((BROKER_DIED == 0)); then
    sample end || BROKER_DIED=1
fi
END_ROW=$(tail -n 1 "$CSV")

# ---- wind down: the churn / takeover loops start nothing that ends past T_END; the QoS run
# ends at T_END + its drain. Each wait is bounded.
wait_pid() { # pid seconds
    local _i
    for _i in $(seq 1 $(($2 * 10))); do alive "$1" || break; sleep 0.1; done
    if alive "$1"; then
        log "pid $1 still running after $2 s: interrupting it"
        kill -INT "$1" 2>/dev/null
        sleep 3
        kill -KILL "$1" 2>/dev/null
    fi
    wait "$1" 2>/dev/null
}
wait_pid "$PUBSUB" 30
PUBSUB_RC=$?
[[ -n ${CHURN_PID:-} ]] && wait_pid "$CHURN_PID" $((CHURN_HOLD + CHURN_PAUSE + 20))
[[ -n ${TKO_PID:-} ]] && wait_pid "$TKO_PID" $((TAKEOVER_HOLD + 20))
if alive "$BROKER"; then
    scrape >"$OUT/metrics.final"
else
    BROKER_DIED=1
fi
kill -INT "$HELD" 2>/dev/null
wait_pid "$HELD" 20
HELD_RC=$?
# After every client is gone, connections (and clean sessions) must return to 0.
if alive "$BROKER"; then
    for _ in $(seq 1 60); do
        scrape >"$OUT/metrics.after"
        [[ $(metric "$OUT/metrics.after" connections_current) == 0 ]] && break
        sleep 0.5
    done
    sleep $((CHURN_EXPIRY + 2)) # let persistent churn sessions expire
    sample after || BROKER_DIED=1
    cp "$OUT/metrics.last" "$OUT/metrics.after"
    HWM=$(hwm_kib "$BROKER")
    kill -INT "$BROKER" 2>/dev/null
    wait_pid "$BROKER" 20
    BROKER_RC=$?
else
    BROKER_DIED=1
    wait "$BROKER" 2>/dev/null
    BROKER_RC=$?
    HWM="?"
fi

# ---- summary
col() { head -n 1 "$CSV" | tr ',' '\n' | grep -nx "$1" | cut -d: -f1; }
RSS_COL=$(col rss_kib)
REF_ROW=$(awk -F, -v s="$STEADY" -v c="$RSS_COL" 'NR > 1 && $2 != "idle" && $1 >= s {print; exit}' "$CSV")
REF_T=$(cut -d, -f1 <<<"$REF_ROW")
REF_RSS=$(cut -d, -f"$RSS_COL" <<<"$REF_ROW")
END_T=$(cut -d, -f1 <<<"$END_ROW")
END_RSS=$(cut -d, -f"$RSS_COL" <<<"$END_ROW")
# min / max / least-squares slope of RSS over the steady-state samples (reference .. end)
read -r SS_MIN SS_MAX SLOPE < <(awk -F, -v a="${REF_T:-0}" -v b="${END_T:-0}" -v c="$RSS_COL" '
    NR > 1 && ($2 == "load" || $2 == "end") && $1 >= a && $1 <= b {
        n++; x = $1 / 60; y = $c; sx += x; sy += y; sxx += x * x; sxy += x * y
        if (min == "" || y < min) min = y; if (y > max) max = y }
    END { d = n * sxx - sx * sx; printf "%s %s %.1f\n", min, max, ((n > 1 && d != 0) ? (n * sxy - sx * sy) / d : 0) }' "$CSV")
FLAT=no
if [[ -n $REF_RSS && -n $END_RSS ]] && ((END_RSS * 100 <= REF_RSS * RSS_TOL_PCT)); then FLAT=yes; fi

PS=$OUT/pubsub.json
LOST=$(jget "$PS" lost)
json_fold() { # sum|max glob key -> sum or max of key over the JSON files (or "0" when none)
    local f acc=0 v
    for f in $2; do
        [[ -f $f ]] || continue
        v=$(jq -r --arg k "$3" '.[$k] // 0' "$f" 2>/dev/null)
        acc=$(awk -v op="$1" -v a="$acc" -v b="${v:-0}" \
            'BEGIN {printf "%.0f", (op == "sum" ? a + b : (b > a ? b : a))}')
    done
    echo "$acc"
}
json_sum() { json_fold sum "$@"; }
json_max() { json_fold max "$@"; }
N_CHURN=$(find "$OUT" -name 'churn-*.json' | wc -l)
N_TKO=$(find "$OUT" -name 'takeover-*.json' | wc -l)
BAD_RUNS=$(grep -vc 'rc=0$' "$OUT/runs.log" 2>/dev/null)
ERROR_COUNTERS="connections_refused keepalive_expired connect_timeouts protocol_errors recv_enobufs slow_consumer_drops slow_consumer_disconnects queue_drops mailbox_drops"
MF=$OUT/metrics.final
ERRSUM=0
PANICS=$(grep -ci 'panick' "$OUT/ringmq.log")

{
    cat "$OUT/params.txt"
    echo
    echo "== broker"
    echo "crashed_or_died=$BROKER_DIED exit_code=${BROKER_RC:-?} panics_in_log=$PANICS VmHWM_kib=$HWM"
    echo "rss_idle_kib=$(awk -F, -v c="$RSS_COL" '$2 == "idle" {print $c}' "$CSV")"
    echo "rss_ref_kib=$REF_RSS (t=${REF_T}s)  rss_end_kib=$END_RSS (t=${END_T}s)" \
        "ratio=$(awk -v a="$REF_RSS" -v b="$END_RSS" 'BEGIN {printf "%.3f", (a > 0 ? b / a : 0)}')" \
        "tolerance=${RSS_TOL_PCT}%  flat=$FLAT"
    echo "rss_steady_min_kib=$SS_MIN rss_steady_max_kib=$SS_MAX rss_slope_kib_per_min=$SLOPE"
    echo "rss_after_all_clients_left_kib=$(awk -F, -v c="$RSS_COL" '$2 == "after" {print $c}' "$CSV")"
    echo "after_all_left: connections_current=$(metric "$OUT/metrics.after" connections_current)" \
        "sessions_current=$(metric "$OUT/metrics.after" sessions_current)" \
        "sessions_expired=$(metric "$OUT/metrics.after" sessions_expired)"
    echo "cpu_s_total=$(awk -F, 'NR > 1 {t = $4} END {print t}' "$CSV" | awk -v k="$TCK" '{printf "%.1f", $1 / k}')"
    echo
    echo "== counters at the end of the load (before the held connections were closed)"
    [[ -f $MF ]] && awk '{print $1 "=" $2}' "$MF"
    echo
    echo "== error counters (must be 0)"
    for k in $ERROR_COUNTERS; do
        v=$(metric "$MF" "$k")
        echo "$k=${v:-?}"
        [[ ${v:-1} == 0 ]] || ERRSUM=$((ERRSUM + 1))
    done
    echo
    echo "== QoS $QOS p2p ($PAIRS pairs, $PUB_RATE msg/s), generator exit code $PUBSUB_RC"
    for k in sent acked received expected lost duplicates reordered unexpected late_sends \
        skipped_not_connected closed reconnects latency_p50_us latency_p99_us latency_p999_us \
        latency_max_us; do
        echo "$k=$(jget "$PS" "$k")"
    done
    echo
    echo "== held connections (exit code $HELD_RC)"
    for k in connects conns_peak conns_end connect_errors connack_errors closed reconnects pings pongs \
        connect_rate connect_p99_us; do
        echo "$k=$(jget "$OUT/held.json" "$k")"
    done
    echo
    echo "== churn: $N_CHURN runs of $CHURN clients"
    for k in connects connect_errors connack_errors closed; do echo "$k=$(json_sum "$OUT/churn-*.json" "$k")"; done
    echo "connect_p99_us_max=$(json_max "$OUT/churn-*.json" connect_p99_us)"
    echo
    echo "== takeover: $N_TKO storms of $TAKEOVER ids"
    for k in connects connect_errors connack_errors takeover_count old_disconnect_0x8e \
        old_disconnect_other old_eof_without_disconnect; do
        echo "$k=$(json_sum "$OUT/takeover-*.json" "$k")"
    done
    echo "takeover_p99_us_max=$(json_max "$OUT/takeover-*.json" takeover_p99_us)"
    echo "takeover_max_us_max=$(json_max "$OUT/takeover-*.json" takeover_max_us)"
    echo "generator runs with non-zero exit: ${BAD_RUNS:-0} (see runs.log)"
    echo
    echo "== RSS over time (t_s rss_kib conns sessions)"
    awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) h[$i] = i; next}
        {printf "%6s %-5s %9s %7s %7s\n", $1, $2, $h["rss_kib"], $h["connections_current"], $h["sessions_current"]}' "$CSV"
} >"$SUMMARY"

PASS=yes
reasons=()
((BROKER_DIED == 0)) || { PASS=no; reasons+=("broker died"); }
[[ $FLAT == yes ]] || { PASS=no; reasons+=("RSS not flat"); }
[[ $LOST == 0 ]] || { PASS=no; reasons+=("QoS lost=$LOST"); }
((PUBSUB_RC == 0)) || { PASS=no; reasons+=("pubsub exit $PUBSUB_RC"); }
((ERRSUM == 0)) || { PASS=no; reasons+=("$ERRSUM error counter(s) non-zero"); }
((PANICS == 0)) || { PASS=no; reasons+=("panic in broker log"); }
echo "RESULT: pass=$PASS ${reasons[*]}" >>"$SUMMARY"
cat "$SUMMARY"
echo "csv: $CSV  summary: $SUMMARY  logs: $OUT" >&2
[[ $PASS == yes ]]
