#!/usr/bin/env bash
# Loopback load comparison for Tessera, all cases in one run.
#
#   benches/load.sh                    # 10 s per case
#   DURATION=5 benches/load.sh         # shorter
#   CONNS=64 WARMUP=2 NGINX=0 KEEP_WORK=1 benches/load.sh
#
# Layout (2 CPUs): wrk + echo upstream (+ Redis, REDIS_CPU) on CPU 0 (GEN_CPU), the proxy
# under test alone on CPU 1 (PROXY_CPU), Tessera with `threads: 1`, nginx with one worker.
# Every process is started by this script, listens on 127.0.0.1 only, on free ports, and is
# stopped by pid on exit. All files live in a mktemp directory (kept with KEEP_WORK=1 or when
# a case fails).
#
# Cases:
#   1 direct          wrk → echo upstream (plain HTTP)                      baseline
#   2 http-none       wrk → Tessera plain-HTTP listener, tenant auth: none
#   3 https-none      wrk → Tessera HTTPS, tenant auth: none ("Tessera plain")
#   4 https-split     HTTPS + split-token reconstruction, embedded store
#   5 redis-cache     as 4, Redis store, local cache on (warm)
#   6 redis-nocache   as 4, Redis store, cache off (one Redis round trip per request)
#   7 split-nolog     as 4, session_log and anomaly disabled (4 has both on, the default)
#   7b split-steal    as 4, work_stealing: true (Pingora's default runtime; Tessera's is false)
#                     (the default session log writes a JSON line per request to stdout, captured in
#                     WORK/<case>/tessera.log, and with a Redis store also XADDs it to a stream)
#   8 nginx-https     nginx HTTPS reverse proxy to the same upstream (NGINX=0 skips)
#
# Requires: cargo, wrk, taskset, openssl, curl, python3; redis-server (installed with apt-get
# when missing); nginx for case 8.

set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-1}          # seconds of unmeasured load before each case (pools, caches)
GEN_CPU=${GEN_CPU:-0}        # wrk + upstream
PROXY_CPU=${PROXY_CPU:-1}    # proxy under test
REDIS_CPU=${REDIS_CPU:-$GEN_CPU}
NGINX=${NGINX:-1}
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
KEEP_WORK=${KEEP_WORK:-0}
PATH_UNDER_TEST=/small
HOST=localhost               # tenant hostname; wrk sends it as SNI and Host

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/tessera

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in cargo wrk taskset openssl curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs; pinning to CPU $PROXY_CPU will fail"

# wrk resolves the URL host itself; everything must go to 127.0.0.1 and nowhere else.
resolved=$(getent ahostsv4 "$HOST" | awk '{print $1}' | sort -u | tr '\n' ' ')
[ "$resolved" = "127.0.0.1 " ] || die "$HOST resolves to '$resolved', expected only 127.0.0.1 (fix /etc/hosts)"
if getent ahostsv6 "$HOST" 2>/dev/null | awk '{print $1}' | grep -qv '^::ffff:127\.0\.0\.1$'; then
    log "warning: $HOST also has an IPv6 address; wrk uses the first address that connects"
fi

WORK=$(mktemp -d -t tessera-load.XXXXXX)
PIDS=()
FAILED=0

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 15 s; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP_WORK" = 1 ] || [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports -----------------------------------------------------------------------------------
# free_port VAR: a free loopback port into VAR (not called in $(...), so USED_PORTS sticks).
USED_PORTS=" 6379 18080 18443 "
free_port() {
    local -n _out=$1
    local p
    while :; do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        USED_PORTS="$USED_PORTS$p "
        _out=$p
        return
    done
}

# --- readiness (polling, never a blind sleep) -----------------------------------------------
# wait_until PID DESCRIPTION LOGFILE CMD...: run CMD every 0.1 s until it succeeds (30 s max),
# failing early if PID died.
wait_until() {
    local pid=$1 what=$2 logf=$3 i
    shift 3
    for i in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$what (pid $pid) exited during start-up"
            show_log "$logf"
            return 1
        fi
        sleep 0.1
    done
    log "$what not ready after 30 s"
    show_log "$logf"
    return 1
}
# show_log FILE: last lines of a log, without the session log's JSON lines (stdout by default).
show_log() {
    log "last lines of $1 (session JSON lines omitted):"
    grep -v '^{' "$1" 2>/dev/null | tail -n 25 >&2 || true
}
http_ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@")" = 200 ]; }

# --- build -----------------------------------------------------------------------------------
log "building (cargo build --release)"
(cd "$ROOT" && cargo build --release --bin tessera)
[ -x "$BIN" ] || die "$BIN not built"

# --- certificates: a CA and a leaf for localhost ---------------------------------------------
CERTS=$WORK/certs
mkdir -p "$CERTS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=Tessera load-test CA" -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$HOST" -keyout "$CERTS/leaf.key" -out "$CERTS/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$HOST" >"$CERTS/leaf.ext"
openssl x509 -req -in "$CERTS/leaf.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" -CAcreateserial \
    -days 2 -extfile "$CERTS/leaf.ext" -out "$CERTS/leaf.pem" 2>/dev/null
cat "$CERTS/leaf.pem" "$CERTS/ca.pem" >"$CERTS/chain.pem"
CERT=$CERTS/chain.pem
KEY=$CERTS/leaf.key

# --- keyring and admin token -----------------------------------------------------------------
"$BIN" keys generate --out "$WORK/keyring" >/dev/null
ADMIN_TOKEN="tsa_$(openssl rand -hex 32)"
ADMIN_SHA=$(printf %s "$ADMIN_TOKEN" | sha256sum | awk '{print $1}')
UPSTREAM_SECRET=upstream-secret-123

# --- echo upstream ---------------------------------------------------------------------------
free_port UP_PORT
taskset -c "$GEN_CPU" "$BIN" upstream-echo --listen "127.0.0.1:$UP_PORT" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_until "$UP_PID" "echo upstream" "$WORK/upstream.log" http_ok "http://127.0.0.1:$UP_PORT$PATH_UNDER_TEST"
log "echo upstream on 127.0.0.1:$UP_PORT (pid $UP_PID, CPU $GEN_CPU)"

# --- Redis (own instance, never 6379) --------------------------------------------------------
REDIS_PID=
REDIS_PORT=
start_redis() {
    if ! command -v redis-server >/dev/null; then
        log "redis-server missing; installing with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    free_port REDIS_PORT
    taskset -c "$REDIS_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --protected-mode yes >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_until "$REDIS_PID" "redis-server" "$WORK/redis.log" redis_ping
    log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID, CPU $REDIS_CPU)"
}
redis_ping() {
    if command -v redis-cli >/dev/null; then
        [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
    else
        local line
        exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
        printf 'PING\r\n' >&3
        read -r -t 1 line <&3 || true
        exec 3>&-
        [ "${line%$'\r'}" = "+PONG" ]
    fi
}

# --- Tessera instances -----------------------------------------------------------------------
# write_config NAME AUTH STORE_YAML EXTRA_YAML [http]: writes WORK/NAME/tessera.yaml into CFG and
# picks the ports (HTTPS_PORT/ADMIN_PORT/HTTP_PORT[NAME]).
declare -A HTTPS_PORT HTTP_PORT ADMIN_PORT TPID PART_A
write_config() {
    local name=$1 auth=$2 store=$3 extra=$4 with_http=${5:-} dir=$WORK/$1
    mkdir -p "$dir"
    local port http_line=""
    free_port port; HTTPS_PORT[$name]=$port
    free_port port; ADMIN_PORT[$name]=$port
    if [ -n "$with_http" ]; then
        free_port port; HTTP_PORT[$name]=$port
        http_line="  http: \"127.0.0.1:${HTTP_PORT[$name]}\""
    fi
    cat >"$dir/tessera.yaml" <<EOF
# generated by benches/load.sh ($name)
listen:
  https: "127.0.0.1:${HTTPS_PORT[$name]}"
$http_line
  admin: "127.0.0.1:${ADMIN_PORT[$name]}"
threads: 1
grace_period: "1s"
store: $store
keys: { file: "$WORK/keyring" }
admin:
  tokens:
    - { name: bench, sha256: $ADMIN_SHA, scope: operator }
$extra
tenants:
  - id: bench
    hostnames: ["$HOST"]
    cert: "$CERT"
    key: "$KEY"
    upstream: "http://127.0.0.1:$UP_PORT"
    auth: $auth
EOF
    CFG=$dir/tessera.yaml
}

# start_tessera NAME CONFIG: start pinned to PROXY_CPU, wait for the admin /readyz.
start_tessera() {
    local name=$1 cfg=$2 pid
    (cd "$WORK/$name" && exec taskset -c "$PROXY_CPU" "$BIN" serve --config "$cfg" \
        --upgrade-sock "$WORK/$name/upgrade.sock") >"$WORK/$name/tessera.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    TPID[$name]=$pid
    wait_until "$pid" "tessera[$name]" "$WORK/$name/tessera.log" \
        http_ok "http://127.0.0.1:${ADMIN_PORT[$name]}/readyz" || return 1
    log "tessera[$name] ready: https 127.0.0.1:${HTTPS_PORT[$name]}${HTTP_PORT[$name]:+, http 127.0.0.1:${HTTP_PORT[$name]}} (pid $pid, CPU $PROXY_CPU)"
}

# mint NAME: Part A for tenant `bench` through the admin API → PART_A[NAME].
mint() {
    local name=$1 resp
    resp=$(curl -s --max-time 10 -X POST "http://127.0.0.1:${ADMIN_PORT[$name]}/v1/tenants/bench/tokens" \
        -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d "{\"token\":\"$UPSTREAM_SECRET\",\"label\":\"bench\"}") || { log "mint[$name]: admin API unreachable"; return 1; }
    PART_A[$name]=$(printf %s "$resp" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("part_a",""))' 2>/dev/null || true)
    if [ -z "${PART_A[$name]}" ]; then
        log "mint[$name] failed: $resp"
        return 1
    fi
}

stop_tessera() {
    local name=$1
    [ -n "${TPID[$name]:-}" ] && stop_pid "${TPID[$name]}"
    TPID[$name]=
}

# --- wrk and result table --------------------------------------------------------------------
CASES=()
declare -A RPS P50 P99 ERRS NOTE BUSY
to_ms() { # 812.00us | 1.23ms | 1.05s | 2.00m → milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}

# check URL CURL_ARGS...: one request must return 200 with the expected body before we measure.
check_request() {
    local url=$1 port body code
    shift
    port=$(printf %s "$url" | sed -E 's#^[a-z]+://[^:/]+:([0-9]+).*#\1#')
    body=$(curl -sk --max-time 5 --resolve "$HOST:$port:127.0.0.1" -o - -w '\n%{http_code}' "$@" "$url") || true
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    if [ "$code" != 200 ] || [ "$body" != ok ]; then
        log "check failed for $url: HTTP $code, body: ${body:0:300}"
        return 1
    fi
}

# machine_busy: % of all CPUs busy over 1 s (taken right before a case, while our processes are
# idle). Anything well above 0 means something else on the machine is skewing the numbers.
machine_busy() {
    local a b
    a=($(head -n1 /proc/stat)); sleep 1; b=($(head -n1 /proc/stat))
    awk -v a="${a[*]:1}" -v b="${b[*]:1}" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); tot = 0;
        for (i = 1; i <= n; i++) tot += y[i] - x[i];
        idle = (y[4] - x[4]) + (y[5] - x[5]);
        printf "%.0f", (tot > 0 ? 100 * (tot - idle) / tot : 0) }' || echo "?"
}

# redis_calls: "GET XADD TOTAL" command counts of our Redis (empty if none running).
redis_calls() {
    [ -n "$REDIS_PORT" ] && command -v redis-cli >/dev/null || return 0
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info commandstats 2>/dev/null | tr -d '\r' | awk -F'[:=,]' '
        /^cmdstat_/ { tot += $3; if ($1 == "cmdstat_get") g = $3; if ($1 == "cmdstat_xadd") x = $3 }
        END { printf "%d %d %d", g, x, tot }'
}

# run_case NAME URL [LOGFILE] [wrk args...]
run_case() {
    local name=$1 url=$2 logf=$3 out
    shift 3
    CASES+=("$name")
    if ! check_request "$url" "$@"; then
        RPS[$name]=FAILED; NOTE[$name]="pre-check failed"
        FAILED=1
        [ -n "$logf" ] && show_log "$logf"
        return 0
    fi
    if [ "$WARMUP" != 0 ]; then
        taskset -c "$GEN_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" "$@" "$url" >/dev/null 2>&1 || true
    fi
    BUSY[$name]=$(machine_busy)
    log "case $name: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s $url (machine busy before: ${BUSY[$name]}%)"
    local r0 r1 total
    r0=$(redis_calls)
    out=$(taskset -c "$GEN_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url" 2>&1) || true
    r1=$(redis_calls)
    printf '%s\n' "$out" >"$WORK/wrk-$name.txt"
    total=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
    if [[ $name == redis-* ]] && [ -n "$r0" ] && [ -n "$r1" ] && [ -n "$total" ] && [ "$total" -gt 0 ]; then
        NOTE[$name]=$(awk -v a="$r0" -v b="$r1" -v n="$total" 'BEGIN { split(a, x, " "); split(b, y, " ");
            printf "redis per request: GET %.2f, XADD %.3f, all cmds %.2f", (y[1]-x[1])/n, (y[2]-x[2])/n, (y[3]-x[3])/n }')
    fi
    RPS[$name]=$(printf '%s\n' "$out" | awk '/^Requests\/sec:/ {print $2}')
    P50[$name]=$(to_ms "$(printf '%s\n' "$out" | awk '$1 == "50%" {print $2; exit}')")
    P99[$name]=$(to_ms "$(printf '%s\n' "$out" | awk '$1 == "99%" {print $2; exit}')")
    local non2xx sockerr
    non2xx=$(printf '%s\n' "$out" | awk '/Non-2xx or 3xx responses:/ {print $NF}')
    sockerr=$(printf '%s\n' "$out" | awk -F'Socket errors: ' '/Socket errors:/ {print $2}')
    ERRS[$name]="${non2xx:+non2xx=$non2xx }${sockerr:+sock($sockerr)}"
    if [ -z "${RPS[$name]}" ]; then
        RPS[$name]=FAILED; NOTE[$name]="wrk produced no result (see $WORK/wrk-$name.txt)"
        FAILED=1
        printf '%s\n' "$out" >&2
    elif [ -n "$non2xx" ]; then
        FAILED=1
        log "case $name had non-2xx responses"
        [ -n "$logf" ] && show_log "$logf"
    fi
}

ratio() { # ratio A B → A/B with 3 decimals, or "-"
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.3f", a/b; else printf "-" }'
}

# --- the cases -------------------------------------------------------------------------------
EMBEDDED() { echo "{ kind: embedded, path: \"$WORK/$1/tessera.redb\" }"; }
NOLOG=$'session_log: { enabled: false }\nanomaly: { enabled: false }'

# 1. direct
run_case direct "http://127.0.0.1:$UP_PORT$PATH_UNDER_TEST" "$WORK/upstream.log"

# 2 + 3. auth: none, one process with both listeners
write_config plain none "$(EMBEDDED plain)" "" http
if start_tessera plain "$CFG"; then
    run_case http-none "http://$HOST:${HTTP_PORT[plain]}$PATH_UNDER_TEST" "$WORK/plain/tessera.log"
    run_case https-none "https://$HOST:${HTTPS_PORT[plain]}$PATH_UNDER_TEST" "$WORK/plain/tessera.log"
else
    FAILED=1; CASES+=(http-none https-none); RPS[http-none]=FAILED; RPS[https-none]=FAILED
fi
stop_tessera plain

# split-token cases: NAME STORE EXTRA
split_case() {
    local name=$1 store=$2 extra=$3
    write_config "$name" split_token "$store" "$extra"
    if start_tessera "$name" "$CFG" && mint "$name"; then
        run_case "$name" "https://$HOST:${HTTPS_PORT[$name]}$PATH_UNDER_TEST" "$WORK/$name/tessera.log" \
            -H "Authorization: Bearer ${PART_A[$name]}"
    else
        FAILED=1; CASES+=("$name"); RPS[$name]=FAILED; NOTE[$name]="start-up or mint failed (see $WORK/$name/tessera.log)"
    fi
    stop_tessera "$name"
}

# 4. split token, embedded store, session log + anomaly on (defaults)
split_case https-split "$(EMBEDDED https-split)" ""

# 5 + 6. Redis store
start_redis
split_case redis-cache "{ kind: redis, url: \"redis://127.0.0.1:$REDIS_PORT/0\", prefix: \"bench5:\" }" ""
split_case redis-nocache "{ kind: redis, url: \"redis://127.0.0.1:$REDIS_PORT/0\", prefix: \"bench6:\", cache: { enabled: false } }" ""

# 7. split token without session log and anomaly detection
split_case split-nolog "$(EMBEDDED split-nolog)" "$NOLOG"

# 7b. split token on Pingora's work-stealing runtime (Tessera's default is work_stealing: false)
split_case split-steal "$(EMBEDDED split-steal)" "work_stealing: true"

# 8. nginx as an HTTPS reverse proxy (peer comparison)
if [ "$NGINX" = 1 ] && [ -x "$NGINX_BIN" ]; then
    NG=$WORK/nginx
    mkdir -p "$NG/logs" "$NG/tmp"
    free_port NG_PORT
    user_line=""
    [ "$(id -u)" = 0 ] && user_line="user root;"
    cat >"$NG/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    upstream echo {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NG_PORT ssl;
        server_name $HOST;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" "$NGINX_BIN" -p "$NG" -e "$NG/logs/error.log" -c "$NG/nginx.conf" >"$NG/stdout.log" 2>&1 &
    NG_PID=$!
    PIDS+=("$NG_PID")
    if wait_until "$NG_PID" "nginx" "$NG/logs/error.log" \
        http_ok -k --resolve "$HOST:$NG_PORT:127.0.0.1" "https://$HOST:$NG_PORT$PATH_UNDER_TEST"; then
        log "nginx ready on 127.0.0.1:$NG_PORT (pid $NG_PID, CPU $PROXY_CPU)"
        run_case nginx-https "https://$HOST:$NG_PORT$PATH_UNDER_TEST" "$NG/logs/error.log"
    else
        FAILED=1; CASES+=(nginx-https); RPS[nginx-https]=FAILED
    fi
    stop_pid "$NG_PID"
fi

# --- report ----------------------------------------------------------------------------------
declare -A LABEL=(
    [direct]="1 upstream direct (http)"
    [http-none]="2 tessera http, auth none"
    [https-none]="3 tessera https, auth none"
    [https-split]="4 tessera https, split token (embedded)"
    [redis-cache]="5 as 4, redis store, cache on"
    [redis-nocache]="6 as 4, redis store, cache off"
    [split-nolog]="7 as 4, no session log/anomaly"
    [split-steal]="7b as 4, work_stealing: true"
    [nginx-https]="8 nginx https reverse proxy"
)
echo
echo "Tessera loopback load test: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s (warm-up ${WARMUP}s), path $PATH_UNDER_TEST"
echo "CPU $GEN_CPU: wrk + echo upstream$([ -n "$REDIS_PID" ] && [ "$REDIS_CPU" = "$GEN_CPU" ] && echo ' + redis'); CPU $PROXY_CPU: proxy (threads: 1)"
echo
printf '%-42s %11s %10s %10s %9s %9s %6s  %s\n' case "req/s" "p50 ms" "p99 ms" "/direct" "/case4" "busy%" "errors / notes"
printf '%-42s %11s %10s %10s %9s %9s %6s  %s\n' "------------------------------------------" "-----------" "----------" "----------" "---------" "---------" "------" "--------------"
for c in "${CASES[@]}"; do
    vs4="-"
    case $c in redis-cache|redis-nocache|split-nolog|split-steal) vs4=$(ratio "${RPS[$c]}" "${RPS[https-split]:-}") ;; esac
    printf '%-42s %11s %10s %10s %9s %9s %6s  %s\n' "${LABEL[$c]:-$c}" "${RPS[$c]:-}" "${P50[$c]:--}" "${P99[$c]:--}" \
        "$(ratio "${RPS[$c]}" "${RPS[direct]:-}")" "$vs4" "${BUSY[$c]:--}" "${ERRS[$c]:-}${NOTE[$c]:+ ${NOTE[$c]}}"
done
echo
echo "(7 vs 4: /case4 > 1 means session log + anomaly detection cost that much throughput;"
echo " busy% = whole-machine CPU use in the second before the case, from processes other than the"
echo " load test's; more than a few % means the numbers are skewed by other work on the machine)"
echo "raw wrk output and logs: $WORK$([ "$KEEP_WORK" = 1 ] || [ "$FAILED" != 0 ] || echo ' (deleted on exit; KEEP_WORK=1 keeps it)')"
[ "$FAILED" = 0 ] || { log "one or more cases failed (see above)"; exit 1; }
