#!/usr/bin/env bash
# bench/run.sh: Portcullis against nginx and against the upstream itself, in ONE run,
# with the same CPU pinning, the same load and the same upstream.
#
#   bench/run.sh                 # build (release), run everything, print a markdown report
#   bench/run.sh > result.md     # progress goes to stderr, the report to stdout
#
# What runs (all on 127.0.0.1, free ports, everything in a temp dir, killed on exit):
#   upstream    nginx `return 200 "ok"`          pinned with the load generator (LOAD_CPU)
#   nginx       nginx reverse proxy, 1 process   pinned to PROXY_CPU
#   portcullis  portcullis run, server.threads 1 pinned to PROXY_CPU
#   wrk         -t1 -cCONNECTIONS --latency      pinned to LOAD_CPU
#
# Rows: direct (wrk -> upstream), nginx, nginx+log (same nginx, buffered access log, for
# comparison with Portcullis's audit record), pingora (bench/pingora-baseline: bare Pingora
# with no logic, same threads; BASELINE=0 skips it), portcullis (a public path),
# portcullis-auth (a signed-in local user's session cookie: decryption, policy with rules, the
# signed assertion and plain identity headers, audit), portcullis-guarded (the same behind a
# 1,000-prefix IP allowlist and two rate limits), portcullis-bearer (the same app and rules for
# a machine client's RS256 JWT, verified once then answered from the verified-token cache) and
# portcullis-apikey (a service account's API key: checksum, keyed hash, constant-time
# compare); with TLS=1 also nginx-tls and
# portcullis-tls (TLS on the client side only; the upstream is always plain HTTP).
# Each round runs every row once (interleaved, so slow drift of a shared machine hits all
# rows alike); the table shows the median over ROUNDS.
#
# Knobs (environment):
#   DURATION=10 WARMUP=2 CONNECTIONS=32 ROUNDS=3 TLS=1 PROXY_CPU=0 LOAD_CPU=1
#   SKIP_BUILD=1 or PORTCULLIS_BIN=/path/to/portcullis   (default: cargo build --release)
#   PC_THREADS=1 PC_WORK_STEALING=false PC_LOG_LEVEL=warn PC_AUDIT_FSYNC=never  (Portcullis config knobs)
#   PINGORA_WORK_STEALING=0|1 (the bare-Pingora row's runtime flavour; its default is Pingora's, 1)
#   NGINX_BIN=nginx WRK_BIN=wrk
#   KEEP=DIR     keep configs, logs, raw wrk output and the audit file in DIR
#   ONLY="portcullis-auth previous-auth"   measure only these rows (ratios of absent rows show -)
#   REDIS=1      adds rows redis-store, redis-store-auth and redis-store-guarded: this build
#                with store.kind: redis against a local redis-server (revocations shared; the
#                guarded app's two rate limits take from shared buckets, one round trip each),
#                with the ratios to the in-memory rows
#   PREVIOUS_BIN=/path/to/older/portcullis   adds rows previous and previous-auth: the same
#                config and load on another binary (a refactoring must not cost time), with
#                their ratios to this build in the summary
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
TLS=${TLS:-1}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PC_THREADS=${PC_THREADS:-1}
PC_WORK_STEALING=${PC_WORK_STEALING:-false}
PC_LOG_LEVEL=${PC_LOG_LEVEL:-warn}
PC_AUDIT_FSYNC=${PC_AUDIT_FSYNC:-never}
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK_BIN=${WRK_BIN:-wrk}
KEEP=${KEEP:-}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# As the systemd unit and the container image run Portcullis.
export MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY:-100} MIMALLOC_ALLOW_THP=${MIMALLOC_ALLOW_THP:-0}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

for tool in "$WRK_BIN" "$NGINX_BIN" taskset curl awk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (Debian: wrk, nginx-light, util-linux, curl)"
done
CPUS=$(nproc)
[ "$PROXY_CPU" -lt "$CPUS" ] && [ "$LOAD_CPU" -lt "$CPUS" ] || die "PROXY_CPU/LOAD_CPU must be below nproc ($CPUS)"
[ "$PROXY_CPU" != "$LOAD_CPU" ] || log "warning: proxy and load generator share CPU $PROXY_CPU"

# --- build ---------------------------------------------------------------------------------
if [ -n "${PORTCULLIS_BIN:-}" ]; then
    PC_BIN=$PORTCULLIS_BIN
elif [ "${SKIP_BUILD:-0}" = 1 ]; then
    PC_BIN="$ROOT/target/release/portcullis"
else
    log "building: nice cargo build --release (several minutes on a 2-core machine)"
    (cd "$ROOT" && nice cargo build --release >&2)
    PC_BIN="$ROOT/target/release/portcullis"
fi
[ -x "$PC_BIN" ] || die "no portcullis binary at $PC_BIN"

# A bare Pingora proxy (bench/pingora-baseline): Pingora's own cost, without Portcullis.
BASELINE=${BASELINE:-1}
PB_BIN="$ROOT/target/release/pingora-baseline"
if [ "$BASELINE" = 1 ] && [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building the bare Pingora baseline (bench/pingora-baseline)"
    (cd "$ROOT/bench/pingora-baseline" && CARGO_TARGET_DIR="$ROOT/target" nice cargo build --release >&2) ||
        { log "warning: the Pingora baseline did not build; its row is skipped"; BASELINE=0; }
fi
[ "$BASELINE" != 1 ] || [ -x "$PB_BIN" ] || { log "warning: no $PB_BIN; the pingora row is skipped"; BASELINE=0; }

# --- temp dir and cleanup ------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ && log "kept run files in $KEEP"
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers -------------------------------------------------------------------------------
USED_PORTS=" "
free_port() {
    # A port nobody accepts on and that this script has not handed out yet, below the
    # ephemeral range so that no outgoing connection can be holding it.
    local port i low
    low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 12000 ] || low=32768
    for i in $(seq 1 200); do
        port=$((10000 + RANDOM % (low - 10000)))
        case "$USED_PORTS" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            USED_PORTS="$USED_PORTS$port "
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

wait_http() { # URL [curl options...]: up to 20 s for a 2xx
    local url=$1 i
    shift
    for i in $(seq 1 200); do
        if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    tail -n 5 "$TMP"/*.stderr "$TMP"/*/error.log >&2 2>/dev/null || true
    die "$url did not answer 2xx in 20 s"
}

cpu_ticks() { # utime+stime of PID (all threads) in clock ticks
    local stat rest
    stat=$(cat "/proc/$1/stat") || die "process $1 is gone"
    rest=${stat##*) }        # drop "pid (comm) ": field 3 (state) becomes $1
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))
}

cpu_busy() { # "busy total" ticks of CPU $1: user+nice+system+steal (irq/softirq left out), all
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

ctx_switches() { # voluntary + involuntary context switches of all threads of PID
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

to_ms() { # wrk duration (123.45us / 1.23ms / 1.02s / 2.00m) -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "" || v == "-") print "-"; else printf f, v }'; }

CLK_TCK=$(getconf CLK_TCK)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

upstream_accepts() { # connections the upstream nginx has accepted so far
    curl -fsS "http://127.0.0.1:$UP_PORT/bench-status" | awk 'NR == 3 { print $1 }'
}

# --- ports, keys, certificates -------------------------------------------------------------
UP_PORT=$(free_port)
NG_PORT=$(free_port)
NGLOG_PORT=$(free_port)
NGTLS_PORT=$(free_port)
PC_PORT=$(free_port)
PCTLS_PORT=$(free_port)
PC_ADMIN_PORT=$(free_port)
PB_PORT=$(free_port)
PV_PORT=$(free_port)
PVTLS_PORT=$(free_port)
PV_ADMIN_PORT=$(free_port)
PREVIOUS_BIN=${PREVIOUS_BIN:-}
REDIS=${REDIS:-0}
RS_PORT=$(free_port)
RSTLS_PORT=$(free_port)
RS_ADMIN_PORT=$(free_port)
REDIS_PORT=$(free_port)
[ -z "$PREVIOUS_BIN" ] || [ -x "$PREVIOUS_BIN" ] || die "no portcullis binary at PREVIOUS_BIN=$PREVIOUS_BIN"

mkdir -p "$TMP/upstream" "$TMP/nginx" "$TMP/portcullis"
eval "$("$PC_BIN" keys generate | grep -E '^PORTCULLIS_(SESSION|AUDIT)_KEY=' | sed 's/^/export /')"
if [ "$TLS" = 1 ]; then
    "$PC_BIN" keys dev-cert --out "$TMP/certs" --name 127.0.0.1 --name localhost >/dev/null
    CERT="$TMP/certs/server.crt"
    KEY="$TMP/certs/server.key"
fi

# --- a bearer-token issuer: an RSA key, its JWKS (served by the upstream nginx), one token ----
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
openssl genrsa -out "$TMP/bench-issuer.key" 2048 2>/dev/null || die "openssl is required"
BENCH_N=$(openssl rsa -in "$TMP/bench-issuer.key" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
BENCH_JWKS="{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"bench\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"$BENCH_N\",\"e\":\"AQAB\"}]}"
BENCH_NOW=$(date +%s)
BENCH_JWT_SIGNED="$(printf '{"alg":"RS256","typ":"at+jwt","kid":"bench"}' | b64url).$(printf '{"iss":"https://issuer.bench.test","aud":"bench-api","sub":"bench-bot","client_id":"bench-bot","scope":"chat","groups":["chat-user"],"entity":"acme","iat":%d,"exp":%d,"jti":"bench"}' "$BENCH_NOW" $((BENCH_NOW + 86400)) | b64url)"
BENCH_JWT="$BENCH_JWT_SIGNED.$(printf '%s' "$BENCH_JWT_SIGNED" | openssl dgst -sha256 -sign "$TMP/bench-issuer.key" -binary | b64url)"
BENCH_API=$("$PC_BIN" keys api-key --json)
BENCH_API_KEY=$(printf '%s' "$BENCH_API" | sed -E 's/.*"key": *"([^"]+)".*/\1/')
BENCH_API_HASH=$(printf '%s' "$BENCH_API" | sed -E 's/.*"key_hash": *"([^"]+)".*/\1/')

# --- upstream: nginx returning a tiny static 200 -------------------------------------------
nginx_common() { # prefix dir
    cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
EOF
}

{
    nginx_common "$TMP/upstream"
    cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { default_type text/plain; return 200 "ok"; }
        location = /bench-status { stub_status; }
        location = /bench-jwks.json { default_type application/json; return 200 '$BENCH_JWKS'; }
    }
}
EOF
} >"$TMP/upstream/nginx.conf"

# --- nginx reverse proxy ----------------------------------------------------------------------
# A well-configured proxy: keep-alive to the upstream (nginx's default is a new upstream
# connection per request, which would make nginx look worse than it is), and the same
# forwarding headers Portcullis adds (X-Forwarded-For/-Proto/-Host, X-Request-Id both ways).
nginx_location() {
    cat <<EOF
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:$UP_PORT;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
        }
EOF
}
{
    nginx_common "$TMP/nginx"
    cat <<EOF
    log_format bench escape=json '{"ts":"\$time_iso8601","request_id":"\$request_id","client_ip":"\$remote_addr","method":"\$request_method","host":"\$host","path":"\$uri","status":\$status}';
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NG_PORT;
$(nginx_location)
    }
    server {
        listen 127.0.0.1:$NGLOG_PORT;
        access_log $TMP/nginx/access.log bench buffer=64k;
$(nginx_location)
    }
EOF
    if [ "$TLS" = 1 ]; then
        cat <<EOF
    server {
        listen 127.0.0.1:$NGTLS_PORT ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
$(nginx_location)
    }
EOF
    fi
    echo "}"
} >"$TMP/nginx/nginx.conf"

# --- Portcullis ------------------------------------------------------------------------------
PC_CONF="$TMP/portcullis/bench.yaml"
signed_in_app() { # NAME [ACCEPT]: an app under /NAME for signed-in users, with two path rules
    cat <<EOF
  - id: bench-$1
    hosts: [127.0.0.1, localhost]
    path_prefix: /$1
    upstream: http://127.0.0.1:$UP_PORT
    allow_plain_http: true
    accept: [${2:-session}]
    access:
      user_types: [internal-user, external-user]
      roles: [chat-user]
    rules:
      - { name: billing, paths: ["/$1/agents/billing-*/**"], access: { roles: [billing] } }
      - { name: admin, paths: ["/$1/admin/**"], access: { user_types: [internal-user] } }
    identity_headers: { plain: true }
EOF
}
PC_PASSWORD="bench-$RANDOM-$RANDOM"
PC_HASH=$(printf '%s\n' "$PC_PASSWORD" | "$PC_BIN" hash-password)
{
    cat <<EOF
# Written by bench/run.sh: one public app, plain HTTP allowed, so that it compares with nginx.
server:
  public_url: http://127.0.0.1:$PC_PORT
  http:
    listen: ["127.0.0.1:$PC_PORT"]
EOF
    if [ "$TLS" = 1 ]; then
        cat <<EOF
  https:
    listen: ["127.0.0.1:$PCTLS_PORT"]
    certificates: [{ cert: "$CERT", key: "$KEY" }]
EOF
    fi
    cat <<EOF
  threads: $PC_THREADS
  work_stealing: $PC_WORK_STEALING
  # The 100 sign-ins of the memory measure come from one address, faster than the default
  # 10/s would let them (the limit only guards sign-in pages and refused credentials).
  pre_auth_rate_limit: { rate: off }
  pid_file: "$TMP/portcullis/portcullis.pid"
  upgrade_sock: "$TMP/portcullis/upgrade.sock"
  grace_period: 1s
  shutdown_timeout: 2s
  log:
    level: $PC_LOG_LEVEL
session:
  encryption_keys: [env:PORTCULLIS_SESSION_KEY]
identity_providers:
  - id: bench
    kind: local
    users:
      - username: bench
        password_hash: "$PC_HASH"
        user_type: internal-user
        email: bench@corp.example
        roles: [chat-user, engineering]
        entity: acme
  - id: bench-issuer
    kind: jwt
    issuer: https://issuer.bench.test
    jwks_uri: http://127.0.0.1:$UP_PORT/bench-jwks.json
    audiences: [bench-api]
    claims: { entity: entity }
identity:
  roles:
    - { role: chat-user, group: chat-user }
service_accounts:
  - id: bench-sync
    key_hashes: ["$BENCH_API_HASH"]
    roles: [chat-user, engineering]
    entity: acme
    user_type: internal-user
apps:
  - id: bench
    hosts: [127.0.0.1, localhost]
    upstream: http://127.0.0.1:$UP_PORT
    allow_plain_http: true
    public_paths: ["/**"]
  # The authenticated path: session cookie decrypted, policy with rules, signed assertion
  # (cached per session), plain identity headers, audit record.
$(signed_in_app auth)
  # The same, guarded: an IP allowlist of 1,000 prefixes and two rate limits (never reached).
  # The signed-in app's rules for machine clients: a bearer JWT, and an API key.
$(signed_in_app bearer bearer)
$(signed_in_app apikey api-key)
$(signed_in_app guarded)
    rate_limits:
      - { key: user, rate: 1000000/s, burst: 1000000 }
      - { key: entity, rate: 1000000/s, burst: 1000000 }
    ip_allowlist:
      cidrs:
$(for i in $(seq 1 999); do printf '        - 10.%d.%d.0/24\n' $((i / 250)) $((i % 250)); done)
        - 127.0.0.0/8
audit:
  path: "$TMP/portcullis/audit.jsonl"
  fsync: $PC_AUDIT_FSYNC
  signing_key: env:PORTCULLIS_AUDIT_KEY
admin:
  listen: 127.0.0.1:$PC_ADMIN_PORT
EOF
} >"$PC_CONF"
"$PC_BIN" check -c "$PC_CONF" >"$TMP/portcullis/check.txt" 2>&1 || { cat "$TMP/portcullis/check.txt" >&2; die "portcullis check failed"; }
if [ "$REDIS" = 1 ]; then
    # The same file with the shared store, on a redis-server of its own.
    mkdir -p "$TMP/redisstore"
    RS_CONF="$TMP/redisstore/portcullis.yaml"
    { sed -e "s#127.0.0.1:$PC_PORT#127.0.0.1:$RS_PORT#g" -e "s#127.0.0.1:$PCTLS_PORT#127.0.0.1:$RSTLS_PORT#g" \
        -e "s#127.0.0.1:$PC_ADMIN_PORT#127.0.0.1:$RS_ADMIN_PORT#g" -e "s#$TMP/portcullis/#$TMP/redisstore/#g" \
        "$PC_CONF"
      printf 'store:\n  kind: redis\n  url: redis://127.0.0.1:%s/0\n' "$REDIS_PORT"
    } >"$RS_CONF"
    "$PC_BIN" check -c "$RS_CONF" >"$TMP/redisstore/check.txt" 2>&1 || { cat "$TMP/redisstore/check.txt" >&2; die "redis store: check failed"; }
fi
if [ -n "$PREVIOUS_BIN" ]; then
    # The same file for the previous binary: its own ports, pid file, socket and audit file.
    mkdir -p "$TMP/previous"
    PV_CONF="$TMP/previous/portcullis.yaml"
    sed -e "s#127.0.0.1:$PC_PORT#127.0.0.1:$PV_PORT#g" -e "s#127.0.0.1:$PCTLS_PORT#127.0.0.1:$PVTLS_PORT#g" \
        -e "s#127.0.0.1:$PC_ADMIN_PORT#127.0.0.1:$PV_ADMIN_PORT#g" -e "s#$TMP/portcullis/#$TMP/previous/#g" \
        "$PC_CONF" >"$PV_CONF"
    # PREVIOUS_WORK_STEALING=true|false: the previous rows run with that `server.work_stealing`
    # (with PREVIOUS_BIN set to this build, an A/B of the runtime flavour in one run).
    [ -z "${PREVIOUS_WORK_STEALING:-}" ] || sed -i "s/^  work_stealing: .*/  work_stealing: $PREVIOUS_WORK_STEALING/" "$PV_CONF"
    "$PREVIOUS_BIN" check -c "$PV_CONF" >"$TMP/previous/check.txt" 2>&1 || { cat "$TMP/previous/check.txt" >&2; die "previous binary: check failed"; }
fi

# --- start ------------------------------------------------------------------------------------
start() { # name cpu command...: starts in the background, records the pid in <NAME>_PID
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.stdout" 2>"$TMP/$name.stderr" &
    PIDS+=("$!")
    printf -v "${name^^}_PID" '%s' "$!"
}

mkdir -p "$TMP/upstream/logs" "$TMP/nginx/logs"
"$NGINX_BIN" -t -q -p "$TMP/upstream" -e "$TMP/upstream/error.log" -c "$TMP/upstream/nginx.conf" || die "upstream nginx config"
"$NGINX_BIN" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" || die "proxy nginx config"
start upstream "$LOAD_CPU" "$NGINX_BIN" -p "$TMP/upstream" -e "$TMP/upstream/error.log" -c "$TMP/upstream/nginx.conf"
start nginx "$PROXY_CPU" "$NGINX_BIN" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
start portcullis "$PROXY_CPU" "$PC_BIN" run -c "$PC_CONF"
# PREVIOUS_ENV="NAME=value …": the previous rows' process runs with these (e.g. allocator
# settings; with PREVIOUS_BIN set to this build, an A/B of the setting in one run).
# shellcheck disable=SC2086
[ -z "$PREVIOUS_BIN" ] || start previous "$PROXY_CPU" env ${PREVIOUS_ENV:-} "$PREVIOUS_BIN" run -c "$PV_CONF"
if [ "$REDIS" = 1 ]; then
    start redis "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    start redisstore "$PROXY_CPU" "$PC_BIN" run -c "$RS_CONF"
fi
if [ "$BASELINE" = 1 ]; then
    mkdir -p "$TMP/pingora"
    start pingora "$PROXY_CPU" "$PB_BIN" "127.0.0.1:$PB_PORT" "127.0.0.1:$UP_PORT" "$PC_THREADS" "$TMP/pingora"
fi

wait_http "http://127.0.0.1:$UP_PORT/"
wait_http "http://127.0.0.1:$NG_PORT/"
wait_http "http://127.0.0.1:$PC_ADMIN_PORT/readyz"
wait_http "http://127.0.0.1:$PC_PORT/"
[ "$BASELINE" != 1 ] || wait_http "http://127.0.0.1:$PB_PORT/"
if [ "$TLS" = 1 ]; then
    wait_http "https://127.0.0.1:$NGTLS_PORT/" -k
    wait_http "https://127.0.0.1:$PCTLS_PORT/" -k
fi
for url in "http://127.0.0.1:$NG_PORT/" "http://127.0.0.1:$PC_PORT/"; do
    body=$(curl -fsS "$url")
    [ "$body" = ok ] || die "$url answered '$body', not the upstream's 'ok'"
done
sleep 1
PC_IDLE_RSS=$(status_kb "$PORTCULLIS_PID" VmRSS)
# Sign in once (CSRF cookie from the sign-in page, then the form); wrk replays the session cookie.
sign_in() { # port dir: prints the Cookie header of a signed-in session
    local port=$1 jar="$2/cookies.txt" csrf session body
    curl -fsS -c "$jar" -o /dev/null "http://127.0.0.1:$port/.portcullis/login"
    csrf=$(awk '$6 == "__Host-portcullis-csrf" { print $7 }' "$jar")
    curl -sS -b "$jar" -c "$jar" -o /dev/null -H "Origin: http://127.0.0.1:$port" \
        --data-urlencode "idp=bench" --data-urlencode "username=bench" \
        --data-urlencode "password=$PC_PASSWORD" --data-urlencode "csrf=$csrf" --data-urlencode "rd=/auth/" \
        "http://127.0.0.1:$port/.portcullis/login"
    session=$(awk '$6 == "__Host-portcullis" { print $7 }' "$jar")
    [ -n "$session" ] || die "benchmark sign-in failed on :$port"
    body=$(curl -fsS -H "Cookie: __Host-portcullis=$session" "http://127.0.0.1:$port/auth/")
    [ "$body" = ok ] || die "authenticated request on :$port answered '$body'"
    printf 'Cookie: __Host-portcullis=%s' "$session"
}
AUTH_COOKIE=$(sign_in "$PC_PORT" "$TMP/portcullis")
for probe in "/bearer/|Authorization: Bearer $BENCH_JWT" "/apikey/|X-API-Key: $BENCH_API_KEY"; do
    body=$(curl -sS -H "${probe#*|}" "http://127.0.0.1:$PC_PORT${probe%%|*}")
    [ "$body" = ok ] || die "machine client on ${probe%%|*} answered '$body'"
done
if [ -n "$PREVIOUS_BIN" ]; then
    wait_http "http://127.0.0.1:$PV_ADMIN_PORT/readyz"
    PV_AUTH_COOKIE=$(sign_in "$PV_PORT" "$TMP/previous")
fi
if [ "$REDIS" = 1 ]; then
    wait_http "http://127.0.0.1:$RS_ADMIN_PORT/readyz"
    RS_AUTH_COOKIE=$(sign_in "$RS_PORT" "$TMP/redisstore")
fi
sleep 1
# Argon2id works in ~19 MiB per password check; the allocator may keep that memory mapped.
PC_SIGNIN_RSS=$(status_kb "$PORTCULLIS_PID" VmRSS)
NG_IDLE_RSS=$(status_kb "$NGINX_PID" VmRSS)
PC_THREADS_LIVE=$(status_kb "$PORTCULLIS_PID" Threads)
log "ready: upstream :$UP_PORT, nginx :$NG_PORT, portcullis :$PC_PORT (pids $UPSTREAM_PID $NGINX_PID $PORTCULLIS_PID)"
log "idle RSS: portcullis ${PC_IDLE_RSS} KiB ($PC_THREADS_LIVE threads), nginx ${NG_IDLE_RSS} KiB"

# --- load ---------------------------------------------------------------------------------------
ROWS="direct nginx nginx+log"
[ "$BASELINE" = 1 ] && ROWS="$ROWS pingora"
ROWS="$ROWS portcullis portcullis-auth portcullis-bearer portcullis-apikey portcullis-guarded"
[ -z "$PREVIOUS_BIN" ] || ROWS="$ROWS previous previous-auth"
[ "$REDIS" != 1 ] || ROWS="$ROWS redis-store redis-store-auth redis-store-guarded"
# ONLY="row row…": measure just these rows (a focused A/B needs more rounds, not more rows).
if [ -n "${ONLY:-}" ]; then
    for row in $ONLY; do [[ " $ROWS " == *" $row "* ]] || die "ONLY: no row $row (rows: $ROWS)"; done
    ROWS=$ONLY
fi
[ "$TLS" = 1 ] && ROWS="$ROWS nginx-tls portcullis-tls"
declare -A URL PROXY_PID HDR
URL[direct]="http://127.0.0.1:$UP_PORT/";          PROXY_PID[direct]=""
URL[nginx]="http://127.0.0.1:$NG_PORT/";           PROXY_PID[nginx]=$NGINX_PID
URL[nginx+log]="http://127.0.0.1:$NGLOG_PORT/";    PROXY_PID[nginx+log]=$NGINX_PID
URL[portcullis]="http://127.0.0.1:$PC_PORT/";      PROXY_PID[portcullis]=$PORTCULLIS_PID
URL[portcullis-auth]="http://127.0.0.1:$PC_PORT/auth/"; PROXY_PID[portcullis-auth]=$PORTCULLIS_PID
HDR[portcullis-auth]=$AUTH_COOKIE
URL[portcullis-bearer]="http://127.0.0.1:$PC_PORT/bearer/"; PROXY_PID[portcullis-bearer]=$PORTCULLIS_PID
HDR[portcullis-bearer]="Authorization: Bearer $BENCH_JWT"
URL[portcullis-apikey]="http://127.0.0.1:$PC_PORT/apikey/"; PROXY_PID[portcullis-apikey]=$PORTCULLIS_PID
HDR[portcullis-apikey]="X-API-Key: $BENCH_API_KEY"
URL[portcullis-guarded]="http://127.0.0.1:$PC_PORT/guarded/"; PROXY_PID[portcullis-guarded]=$PORTCULLIS_PID
HDR[portcullis-guarded]=$AUTH_COOKIE
URL[redis-store]="http://127.0.0.1:$RS_PORT/";    PROXY_PID[redis-store]=${REDISSTORE_PID:-}
URL[redis-store-auth]="http://127.0.0.1:$RS_PORT/auth/"; PROXY_PID[redis-store-auth]=${REDISSTORE_PID:-}
HDR[redis-store-auth]=${RS_AUTH_COOKIE:-}
URL[redis-store-guarded]="http://127.0.0.1:$RS_PORT/guarded/"; PROXY_PID[redis-store-guarded]=${REDISSTORE_PID:-}
HDR[redis-store-guarded]=${RS_AUTH_COOKIE:-}
URL[previous]="http://127.0.0.1:$PV_PORT/";       PROXY_PID[previous]=${PREVIOUS_PID:-}
URL[previous-auth]="http://127.0.0.1:$PV_PORT/auth/"; PROXY_PID[previous-auth]=${PREVIOUS_PID:-}
HDR[previous-auth]=${PV_AUTH_COOKIE:-}
URL[pingora]="http://127.0.0.1:$PB_PORT/";         PROXY_PID[pingora]=${PINGORA_PID:-}
URL[nginx-tls]="https://127.0.0.1:$NGTLS_PORT/";   PROXY_PID[nginx-tls]=$NGINX_PID
URL[portcullis-tls]="https://127.0.0.1:$PCTLS_PORT/"; PROXY_PID[portcullis-tls]=$PORTCULLIS_PID

declare -A R_RPS R_P50 R_P99 R_CPU R_UTIL R_UPCPU R_ERR R_CONN R_CSW R_NOISE
PC_REQUESTS=0  # every request sent through Portcullis, warm-ups included (audit cross-check)
mkdir -p "$TMP/wrk"

measure() { # row round
    local row=$1 round=$2 url=${URL[$1]} pid=${PROXY_PID[$1]} out warm t0 t1 c0 c1 u0 u1 a0 a1 b0 b1 s0 s1 reqs secs rps p50 p99 bad errs
    warm="$TMP/wrk/$row.$round.warmup"
    out="$TMP/wrk/$row.$round.txt"
    local -a extra=()
    [ -n "${HDR[$row]:-}" ] && extra=(-H "${HDR[$row]}")
    taskset -c "$LOAD_CPU" "$WRK_BIN" -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${extra[@]}" "$url" >"$warm" 2>&1
    [ -n "$pid" ] && t0=$(cpu_ticks "$pid") && c0=$(ctx_switches "$pid")
    a0=$(upstream_accepts)
    b0=$(cpu_busy "$PROXY_CPU")
    u0=$(cpu_ticks "$UPSTREAM_PID")
    s0=$(date +%s.%N)
    taskset -c "$LOAD_CPU" "$WRK_BIN" -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${extra[@]}" "$url" >"$out" 2>&1
    s1=$(date +%s.%N)
    [ -n "$pid" ] && t1=$(cpu_ticks "$pid") && c1=$(ctx_switches "$pid")
    u1=$(cpu_ticks "$UPSTREAM_PID")
    b1=$(cpu_busy "$PROXY_CPU")
    a1=$(upstream_accepts)
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || { cat "$out" >&2; die "$row: wrk completed no requests"; }
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    errs=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
    errs=$(( ${bad:-0} + ${errs:-0} ))
    secs=$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')
    R_RPS[$row.$round]=$rps
    R_P50[$row.$round]=$p50
    R_P99[$row.$round]=$p99
    R_ERR[$row.$round]=$errs
    R_CONN[$row.$round]=$((a1 - a0 - 1))   # minus the status request itself
    # Work on the proxy's CPU that is not the proxy: other processes, and the hypervisor's steal.
    R_NOISE[$row.$round]=$(awk -v b0="$b0" -v b1="$b1" -v p=$(( ${t1:-0} - ${t0:-0} )) 'BEGIN {
        split(b0, x, " "); split(b1, y, " "); busy = y[1] - x[1] - p; total = y[2] - x[2]
        if (busy < 0) busy = 0; printf "%.0f", (total > 0 ? busy / total * 100 : 0) }')
    R_UPCPU[$row.$round]=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.3f", t / hz / n * 1e6 }')
    if [ -n "$pid" ]; then
        R_CPU[$row.$round]=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.3f", t / hz / n * 1e6 }')
        R_UTIL[$row.$round]=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.0f", t / hz / s * 100 }')
        R_CSW[$row.$round]=$(awk -v c=$((c1 - c0)) -v n="$reqs" 'BEGIN { printf "%.3f", c / n }')
    else
        R_CPU[$row.$round]=-
        R_UTIL[$row.$round]=-
        R_CSW[$row.$round]=-
    fi
    case $row in portcullis*)
        PC_REQUESTS=$(( PC_REQUESTS + reqs + $(awk '/requests in/ { print $1 }' "$warm") )) ;;
    esac
    log "round $round $(printf '%-15s' "$row") $(fmt "$rps" '%.0f') req/s  p50 ${p50} ms  p99 ${p99} ms  proxy CPU ${R_CPU[$row.$round]} us/req (${R_UTIL[$row.$round]}% of a core, ${R_CSW[$row.$round]} ctx sw/req)  new upstream conns ${R_CONN[$row.$round]}  other load on CPU $PROXY_CPU ${R_NOISE[$row.$round]}%  errors $errs"
}

for round in $(seq 1 "$ROUNDS"); do
    for row in $ROWS; do
        measure "$row" "$round"
    done
done

PC_PEAK_RSS=$(status_kb "$PORTCULLIS_PID" VmHWM)
NG_PEAK_RSS=$(status_kb "$NGINX_PID" VmHWM)
# The issue-16 memory target: 100 password sign-ins (each Argon2id's 19 MiB) and the load above,
# then ten thousand more requests, and what stays resident.
for _ in $(seq 2 100); do sign_in "$PC_PORT" "$TMP/portcullis" >/dev/null; done
taskset -c "$LOAD_CPU" "$WRK_BIN" -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PC_PORT/" >"$TMP/after-sign-ins.wrk" 2>&1
sleep 1
PC_AFTER_RSS=$(status_kb "$PORTCULLIS_PID" VmRSS)
sleep 1.5   # let the audit writer drain and flush
AUDIT_LINES=$(wc -l <"$TMP/portcullis/audit.jsonl")

# --- report -----------------------------------------------------------------------------------
declare -A M_RPS M_P50 M_P99 M_CPU M_UTIL M_UPCPU M_ERR M_CONN M_CSW M_NOISE M_CPU_MIN M_CPU_MAX
for row in $ROWS; do
    rps=() p50=() p99=() cpu=() util=() upcpu=() conn=() csw=() noise=() err=0
    for round in $(seq 1 "$ROUNDS"); do
        rps+=("${R_RPS[$row.$round]}"); p50+=("${R_P50[$row.$round]}"); p99+=("${R_P99[$row.$round]}")
        cpu+=("${R_CPU[$row.$round]}"); util+=("${R_UTIL[$row.$round]}"); upcpu+=("${R_UPCPU[$row.$round]}")
        conn+=("${R_CONN[$row.$round]}"); csw+=("${R_CSW[$row.$round]}"); noise+=("${R_NOISE[$row.$round]}")
        err=$(( err + ${R_ERR[$row.$round]} ))
    done
    M_RPS[$row]=$(median "${rps[@]}"); M_P50[$row]=$(median "${p50[@]}"); M_P99[$row]=$(median "${p99[@]}")
    M_UPCPU[$row]=$(median "${upcpu[@]}"); M_CONN[$row]=$(median "${conn[@]}"); M_ERR[$row]=$err
    M_NOISE[$row]=$(printf '%s\n' "${noise[@]}" | sort -g | tail -1)
    if [ "${cpu[0]}" = - ]; then
        M_CPU[$row]=-; M_UTIL[$row]=-; M_CSW[$row]=-; M_CPU_MIN[$row]=-; M_CPU_MAX[$row]=-
    else
        M_CPU[$row]=$(median "${cpu[@]}"); M_UTIL[$row]=$(median "${util[@]}"); M_CSW[$row]=$(median "${csw[@]}")
        M_CPU_MIN[$row]=$(printf '%s\n' "${cpu[@]}" | sort -g | head -1)
        M_CPU_MAX[$row]=$(printf '%s\n' "${cpu[@]}" | sort -g | tail -1)
    fi
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v limit="$2" 'BEGIN { if (v == "-") print "n/a"; else if (v + 0 <= limit + 0) print "**met**"; else print "**not met**" }'; }

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
KERNEL=$(uname -r)
PC_VERSION=$("$PC_BIN" --version 2>/dev/null || echo portcullis)
NG_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$( ("$WRK_BIN" -v 2>&1 || true) | awk 'NR == 1 { print $2 }')
GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(cd "$ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo " (+ uncommitted changes)" || true)

CPU_RATIO=$(ratio "${M_CPU[portcullis]:--}" "${M_CPU[nginx]:--}")
CPU_RATIO_LOG=$(ratio "${M_CPU[portcullis]:--}" "${M_CPU[nginx+log]:--}")
CPU_RATIO_PB=-; PB_RATIO_NG=-
if [ "$BASELINE" = 1 ]; then
    CPU_RATIO_PB=$(ratio "${M_CPU[portcullis]:--}" "${M_CPU[pingora]:--}")
    PB_RATIO_NG=$(ratio "${M_CPU[pingora]:--}" "${M_CPU[nginx]:--}")
fi
RPS_RATIO=$(ratio "${M_RPS[portcullis]:--}" "${M_RPS[nginx]:--}")
P50_RATIO=$(ratio "${M_P50[portcullis]:--}" "${M_P50[nginx]:--}")
P99_RATIO=$(ratio "${M_P99[portcullis]:--}" "${M_P99[nginx]:--}")
PC_IDLE_MIB=$(awk -v k="$PC_IDLE_RSS" 'BEGIN { printf "%.1f", k / 1024 }')

cat <<EOF
## Benchmark run $(date -u +%Y-%m-%dT%H:%MZ)

- Machine: $CPUS × $CPU_MODEL, Linux $KERNEL
- Portcullis: $PC_VERSION, git $GIT_REV$GIT_DIRTY, release build; \`server.threads: $PC_THREADS\`, \`log.level: $PC_LOG_LEVEL\`, \`audit.fsync: $PC_AUDIT_FSYNC\`
- nginx: $NG_VERSION, one process (\`master_process off\`), \`access_log off\` (except the nginx+log row), keep-alive to the upstream
- Load: wrk $WRK_VERSION, \`-t1 -c$CONNECTIONS --latency\`, ${WARMUP}s warm-up + ${DURATION}s measured per row, $ROUNDS interleaved round(s), medians shown
- Pinning: proxy (nginx or Portcullis) on CPU $PROXY_CPU; wrk and the upstream nginx (\`return 200 "ok"\`) on CPU $LOAD_CPU
- Load average before the run: $LOADAVG_START (anything but ~0 means other work shared the machine; see the "other load" column)

| Row | req/s | p50 ms | p99 ms | proxy CPU µs/req (min–max) | proxy CPU % of a core | proxy context switches/req | upstream CPU µs/req | new upstream conns | other load on proxy CPU, worst round | errors |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
for row in $ROWS; do
    noise_cell="${M_NOISE[$row]}%"
    [ "${M_CPU[$row]}" != - ] || noise_cell="-"   # no proxy in this row: its CPU is free for others
    if [ "${M_CPU[$row]}" = - ]; then range="-"; else
        range="$(fmt "${M_CPU[$row]}" '%.1f') ($(fmt "${M_CPU_MIN[$row]}" '%.1f')–$(fmt "${M_CPU_MAX[$row]}" '%.1f'))"
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$row" "$(fmt "${M_RPS[$row]}" '%.0f')" \
        "$(fmt "${M_P50[$row]}" '%.2f')" "$(fmt "${M_P99[$row]}" '%.2f')" "$range" "${M_UTIL[$row]}" "$(fmt "${M_CSW[$row]}" '%.2f')" \
        "$(fmt "${M_UPCPU[$row]}" '%.1f')" "${M_CONN[$row]}" "$noise_cell" "${M_ERR[$row]}"
done

paired() { # row other: median over rounds of row's CPU per request ÷ other's in the same round
    local r out=()
    for r in $(seq 1 "$ROUNDS"); do
        [ -n "${R_CPU[$1.$r]:-}" ] && [ -n "${R_CPU[$2.$r]:-}" ] || { echo -; return; }
        out+=("$(ratio "${R_CPU[$1.$r]}" "${R_CPU[$2.$r]}")")
    done
    median "${out[@]}"
}
cat <<EOF

| Portcullis ÷ nginx (plain HTTP) | ratio |
|---|---:|
| CPU per request | **$CPU_RATIO** |
| CPU per request, authenticated (session, policy, assertion) vs nginx without auth | **$(ratio "${M_CPU[portcullis-auth]:--}" "${M_CPU[nginx]:--}")** |
| authenticated ÷ public, Portcullis (what identity costs) | $(ratio "${M_CPU[portcullis-auth]:--}" "${M_CPU[portcullis]:--}") |
| bearer JWT (cached) ÷ session cookie, CPU per request, median of per-round ratios (target ≤ 1.1) | $(paired portcullis-bearer portcullis-auth) |
| API key ÷ session cookie, CPU per request, median of per-round ratios (target ≤ 1.1) | $(paired portcullis-apikey portcullis-auth) |
| guarded ÷ authenticated (1,000-prefix allowlist + 2 rate limits; target ≤ 1.1) | $(ratio "${M_CPU[portcullis-guarded]:--}" "${M_CPU[portcullis-auth]:--}") |
| CPU per request vs nginx+log | $CPU_RATIO_LOG |
| CPU per request vs bare Pingora (what Portcullis adds) | $CPU_RATIO_PB |
| bare Pingora ÷ nginx, CPU per request (the engine's own gap) | $PB_RATIO_NG |
| req/s | $RPS_RATIO |
| p50 latency | $P50_RATIO |
| p99 latency | $P99_RATIO |
EOF
if [ "$REDIS" = 1 ]; then
    cat <<EOF
| store.kind redis ÷ memory, CPU per request, public, median of per-round ratios | $(paired redis-store portcullis) |
| store.kind redis ÷ memory, CPU per request, signed in, median of per-round ratios | $(paired redis-store-auth portcullis-auth) |
| store.kind redis ÷ memory, CPU per request, signed in, two rate limits, median of per-round ratios | $(paired redis-store-guarded portcullis-guarded) |
| store.kind redis ÷ memory, req/s, signed in, two rate limits (both asked in one pipelined round trip) | $(ratio "${M_RPS[redis-store-guarded]:--}" "${M_RPS[portcullis-guarded]:--}") |
| store.kind redis ÷ memory, p50 latency, signed in, two rate limits | $(ratio "${M_P50[redis-store-guarded]:--}" "${M_P50[portcullis-guarded]:--}") |
EOF
fi
if [ -n "$PREVIOUS_BIN" ]; then
    cat <<EOF
| this build ÷ previous binary, CPU per request, public, median of per-round ratios (rows interleave, so drift hits both; target 0.95–1.05) | $(paired portcullis previous) |
| this build ÷ previous binary, CPU per request, signed in, median of per-round ratios (target 0.95–1.05) | $(paired portcullis-auth previous-auth) |
| this build ÷ previous binary, CPU per request, public (target 0.95–1.05) | $(ratio "${M_CPU[portcullis]:--}" "${M_CPU[previous]:--}") |
| this build ÷ previous binary, CPU per request, signed in (target 0.95–1.05) | $(ratio "${M_CPU[portcullis-auth]:--}" "${M_CPU[previous-auth]:--}") |
| this build ÷ previous binary, req/s, public | $(ratio "${M_RPS[portcullis]:--}" "${M_RPS[previous]:--}") |
| this build ÷ previous binary, req/s, signed in | $(ratio "${M_RPS[portcullis-auth]:--}" "${M_RPS[previous-auth]:--}") |
EOF
fi
if [ "$TLS" = 1 ]; then
    cat <<EOF
| CPU per request, TLS | $(ratio "${M_CPU[portcullis-tls]:--}" "${M_CPU[nginx-tls]:--}") |
| req/s, TLS | $(ratio "${M_RPS[portcullis-tls]:--}" "${M_RPS[nginx-tls]:--}") |
EOF
fi
cat <<EOF

| Memory | Portcullis | nginx |
|---|---:|---:|
| idle RSS (after start, before load) | $PC_IDLE_MIB MiB | $(awk -v k="$NG_IDLE_RSS" 'BEGIN { printf "%.1f", k / 1024 }') MiB |
| RSS after one password sign-in (Argon2id, 19 MiB working memory) | $(awk -v k="$PC_SIGNIN_RSS" 'BEGIN { printf "%.1f", k / 1024 }') MiB | - |
| RSS after 100 password sign-ins, all loads and 2 s more of the public row | $(awk -v k="$PC_AFTER_RSS" 'BEGIN { printf "%.1f", k / 1024 }') MiB | - |
| peak RSS (VmHWM, after all loads) | $(awk -v k="$PC_PEAK_RSS" 'BEGIN { printf "%.1f", k / 1024 }') MiB | $(awk -v k="$NG_PEAK_RSS" 'BEGIN { printf "%.1f", k / 1024 }') MiB |

Audit: $AUDIT_LINES lines in Portcullis's audit file for $PC_REQUESTS requests counted by wrk through Portcullis
(one hash-chained record per request, plus checkpoints and the readiness probes; wrk does not count requests still in flight when it stops).

| Target | measured | verdict |
|---|---:|---|
| Portcullis passthrough CPU per request ≤ 1.0× nginx | $CPU_RATIO× | $(verdict "$CPU_RATIO" 1.0) |
| Portcullis idle RSS ≤ 30 MiB | $PC_IDLE_MIB MiB | $(verdict "$PC_IDLE_MIB" 30) |
| Portcullis RSS after 100 sign-ins and the load ≤ 40 MiB | $(awk -v k="$PC_AFTER_RSS" 'BEGIN { printf "%.1f", k / 1024 }') MiB | $(verdict "$(awk -v k="$PC_AFTER_RSS" 'BEGIN { printf "%.1f", k / 1024 }')" 40) |
EOF
log "done"
