#!/usr/bin/env bash
# bench/streams.sh: many concurrent SSE streams through one Portcullis process (the workload of
# a chat app), with memory per open stream, the delay each event gains, and whether memory
# comes back after the streams end.
#
#   bench/streams.sh                  # build (release), run, print a markdown report
#   STREAMS=10000 EVENTS=30 bench/streams.sh
#
# What runs (127.0.0.1, free ports, a temp dir, everything killed on exit):
#   upstream    bench/streams.py upstream: every GET is a chunked SSE stream of EVENTS events,
#               one a second, 64 bytes each, stamped with their send time
#   portcullis  one process, server.threads PC_THREADS; the app takes a service account's API key,
#               so every stream is a signed-in request (assertion, audit, the open-stream registry
#               the revocation sweeper walks)
#   client      bench/streams.py client: STREAMS connections opened at RAMP per second
# Phases: the same load straight to the upstream (the delay the client and upstream cause
# themselves), then through Portcullis. Portcullis's RSS is read idle, with every stream open,
# right after they end and SETTLE seconds later. Then WEBSOCKETS idle WebSockets through
# Portcullis (upgraded, no message, closed by the upstream after EVENTS seconds) and the RSS
# with all of them open.
#
# Knobs: STREAMS=10000 EVENTS=30 RAMP=1000 SETTLE=60 WEBSOCKETS=2000 (0: none) PC_THREADS=1 KEEP=DIR
#        SKIP_BUILD=1 or PORTCULLIS_BIN=/path/to/portcullis   (default: cargo build --release)
set -euo pipefail

STREAMS=${STREAMS:-10000}
EVENTS=${EVENTS:-30}
RAMP=${RAMP:-1000}
SETTLE=${SETTLE:-60}
WEBSOCKETS=${WEBSOCKETS:-2000}
PC_THREADS=${PC_THREADS:-1}
KEEP=${KEEP:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

log() { printf '[streams] %s\n' "$*" >&2; }
die() { printf '[streams] error: %s\n' "$*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is required"

# Every stream is one client socket and, through Portcullis, two more.
ulimit -n "$(( STREAMS * 3 + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt "$(( STREAMS * 2 + 200 ))" ] || die "the fd limit $(ulimit -n) is too low for $STREAMS streams (raise the hard limit)"

if [ -n "${PORTCULLIS_BIN:-}" ]; then
    PC_BIN=$PORTCULLIS_BIN
elif [ "${SKIP_BUILD:-0}" = 1 ]; then
    PC_BIN="$ROOT/target/release/portcullis"
else
    log "building: nice cargo build --release"
    (cd "$ROOT" && nice cargo build --release --locked >&2)
    PC_BIN="$ROOT/target/release/portcullis"
fi
[ -x "$PC_BIN" ] || die "no portcullis binary at $PC_BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-streams.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ && log "kept run files in $KEEP"; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
wait_port() {
    local i
    for i in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    die "nothing listens on $1"
}

UP_PORT=$(free_port)
PC_PORT=$(free_port)
PC_ADMIN_PORT=$(free_port)
eval "$("$PC_BIN" keys generate | grep -E '^PORTCULLIS_(SESSION|AUDIT)_KEY=' | sed 's/^/export /')"
API=$("$PC_BIN" keys api-key --json)
API_KEY=$(printf '%s' "$API" | sed -E 's/.*"key": *"([^"]+)".*/\1/')
API_HASH=$(printf '%s' "$API" | sed -E 's/.*"key_hash": *"([^"]+)".*/\1/')

cat >"$TMP/portcullis.yaml" <<EOF
server:
  public_url: http://127.0.0.1:$PC_PORT
  http:
    listen: ["127.0.0.1:$PC_PORT"]
  threads: $PC_THREADS
  pid_file: "$TMP/portcullis.pid"
  upgrade_sock: "$TMP/upgrade.sock"
  grace_period: 0s
  shutdown_timeout: 1s
  log: { level: warn }
session:
  encryption_keys: [env:PORTCULLIS_SESSION_KEY]
service_accounts:
  - id: stream-client
    key_hashes: ["$API_HASH"]
    roles: [chat-user]
apps:
  - id: chat
    hosts: [127.0.0.1]
    upstream: http://127.0.0.1:$UP_PORT
    allow_plain_http: true
    accept: [api-key]
    access: { user_types: [internal-user, external-user], roles: [chat-user] }
audit:
  path: "$TMP/audit.jsonl"
  fsync: never
  signing_key: env:PORTCULLIS_AUDIT_KEY
admin:
  listen: 127.0.0.1:$PC_ADMIN_PORT
EOF
"$PC_BIN" check -c "$TMP/portcullis.yaml" >"$TMP/check.txt" 2>&1 || { cat "$TMP/check.txt" >&2; die "check failed"; }

python3 "$ROOT/bench/streams.py" upstream "$UP_PORT" "$EVENTS" 2>"$TMP/upstream.stderr" &
PIDS+=("$!")
# As the systemd unit and the container image run it (MIMALLOC_PURGE_DELAY=100 and
# MIMALLOC_ALLOW_THP=0 unless set).
MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY:-100} MIMALLOC_ALLOW_THP=${MIMALLOC_ALLOW_THP:-0} "$PC_BIN" run -c "$TMP/portcullis.yaml" >"$TMP/portcullis.stdout" 2>"$TMP/portcullis.stderr" &
PC_PID=$!
PIDS+=("$PC_PID")
wait_port "$UP_PORT"
wait_port "$PC_PORT"
sleep 1

run_client() { # mode count port header... ; prints the result line, samples Portcullis's RSS when all are open
    local mode=$1 count=$2 port=$3 out="$TMP/$1.$3" opened_rss=""
    shift 3
    python3 "$ROOT/bench/streams.py" "$mode" 127.0.0.1 "$port" /stream "$count" "$RAMP" "$@" \
        >"$out.json" 2>"$out.stderr" &
    local client=$!
    while kill -0 "$client" 2>/dev/null; do
        if [ -z "$opened_rss" ] && grep -q "^OPEN $count\$" "$out.stderr" 2>/dev/null; then
            sleep 2
            opened_rss=$(rss_kb "$PC_PID")
            echo "$opened_rss" >"$out.rss"
        fi
        sleep 0.5
    done
    wait "$client" || true
    cat "$out.json"
}

log "direct: $STREAMS streams of $EVENTS events straight to the upstream"
DIRECT=$(run_client client "$STREAMS" "$UP_PORT")
log "direct: $DIRECT"
IDLE_RSS=$(rss_kb "$PC_PID")
log "through Portcullis (idle RSS $IDLE_RSS KiB)"
THROUGH=$(run_client client "$STREAMS" "$PC_PORT" "X-API-Key: $API_KEY")
log "through: $THROUGH"
OPEN_RSS=$(cat "$TMP/client.$PC_PORT.rss" 2>/dev/null || echo "")
AFTER_RSS=$(rss_kb "$PC_PID")
log "waiting ${SETTLE}s for memory to come back"
sleep "$SETTLE"
SETTLED_RSS=$(rss_kb "$PC_PID")
PEAK_RSS=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$PC_PID/status")
WS_RESULT='{"opened": 0, "completed": 0, "failed": 0, "errors": {}}'
WS_BEFORE_RSS=""
WS_OPEN_RSS=""
if [ "$WEBSOCKETS" -gt 0 ]; then
    log "$WEBSOCKETS idle WebSockets through Portcullis, held ${EVENTS}s"
    WS_BEFORE_RSS=$(rss_kb "$PC_PID")
    WS_RESULT=$(run_client websockets "$WEBSOCKETS" "$PC_PORT" "X-API-Key: $API_KEY")
    log "websockets: $WS_RESULT"
    WS_OPEN_RSS=$(cat "$TMP/websockets.$PC_PORT.rss" 2>/dev/null || echo "")
fi

field() { printf '%s' "$1" | python3 -c "import json, sys; print(json.load(sys.stdin).get('$2'))"; }
mib() { awk -v k="$1" 'BEGIN { if (k == "") print "-"; else printf "%.1f", k / 1024 }'; }
PER_STREAM=$(awk -v o="$OPEN_RSS" -v i="$IDLE_RSS" -v n="$(field "$THROUGH" opened)" 'BEGIN { if (o == "" || n == 0) print "-"; else printf "%.1f", (o - i) / n }')

cat <<EOF
## Streams run $(date -u +%Y-%m-%dT%H:%MZ)

- Machine: $(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r)
- Portcullis: git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown), release build, \`server.threads: $PC_THREADS\`; every stream authenticated by an API key
- Load: $STREAMS SSE streams opened at $RAMP/s, $EVENTS events each (one a second, 64 bytes); client and upstream are Python asyncio on the same machine

| | streams opened | completed | failed | events | delay p50 ms | delay p99 ms | delay max ms |
|---|---:|---:|---:|---:|---:|---:|---:|
| direct to the upstream | $(field "$DIRECT" opened) | $(field "$DIRECT" completed) | $(field "$DIRECT" failed) | $(field "$DIRECT" events) | $(field "$DIRECT" p50_ms) | $(field "$DIRECT" p99_ms) | $(field "$DIRECT" max_ms) |
| through Portcullis | $(field "$THROUGH" opened) | $(field "$THROUGH" completed) | $(field "$THROUGH" failed) | $(field "$THROUGH" events) | $(field "$THROUGH" p50_ms) | $(field "$THROUGH" p99_ms) | $(field "$THROUGH" max_ms) |

| Portcullis memory | RSS |
|---|---:|
| idle, before the streams | $(mib "$IDLE_RSS") MiB |
| all $STREAMS streams open | $(mib "$OPEN_RSS") MiB |
| per open stream | $PER_STREAM KiB |
| right after they ended | $(mib "$AFTER_RSS") MiB |
| ${SETTLE} s later | $(mib "$SETTLED_RSS") MiB |
| peak (VmHWM) | $(mib "$PEAK_RSS") MiB |

Failures by kind (through Portcullis): $(field "$THROUGH" errors)
EOF
if [ "$WEBSOCKETS" -gt 0 ]; then
    cat <<EOF

| $WEBSOCKETS idle WebSockets through Portcullis | |
|---|---:|
| opened / closed by the upstream's close frame / failed | $(field "$WS_RESULT" opened) / $(field "$WS_RESULT" completed) / $(field "$WS_RESULT" failed) |
| RSS before / with all open | $(mib "$WS_BEFORE_RSS") / $(mib "$WS_OPEN_RSS") MiB |
| per idle WebSocket | $(awk -v o="$WS_OPEN_RSS" -v i="$WS_BEFORE_RSS" -v n="$(field "$WS_RESULT" opened)" 'BEGIN { if (o == "" || n == 0) print "-"; else printf "%.1f", (o - i) / n }') KiB |

Failures by kind (WebSockets): $(field "$WS_RESULT" errors)
EOF
fi
log "done"
