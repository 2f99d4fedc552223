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
# Every case prints req/s, p50, p99, the ratio to `direct` and µs/req: CPU time (utime + stime
# from /proc/<pid>/stat, the proxy process and its direct children) spent by the process under
# test during the measured run, divided by the requests it served. `cpu/bare` divides that by
# the bare Pingora case's µs/req (issue 11's goal: Tessera's full path ≤ 1.15).
#
# Cases (HTTP/1.1, wrk):
#   1 direct          wrk → echo upstream (plain HTTP)                      baseline
#   0 bare            examples/bare_proxy.rs: a minimal Pingora `ProxyHttp`, same certificate,
#                     tenant header set and Authorization replaced, same runtime flavour
#   0b lean           the same binary with --lean: the same work on pingora-core alone (no
#                     pingora-proxy); only run when named in ONLY (lean, h2-lean)
#   2 http-none       wrk → Tessera plain-HTTP listener, tenant auth: none
#   3 https-none      wrk → Tessera HTTPS, tenant auth: none ("Tessera plain")
#   4 https-split     HTTPS + split-token reconstruction, embedded store
#   5 redis-cache     as 4, Redis store, local cache on (warm)
#   6 redis-nocache   as 4, Redis store, cache off (one Redis round trip per request)
#   7 split-nolog     as 4, session_log and anomaly disabled (4 has both on, the default)
#   7b split-steal    as 4, work_stealing: true (Pingora's default runtime; Tessera's is false)
#   7c split-general  as 4, lean_path: false (every request through pingora-proxy; case 4 is
#                     served by Tessera's lean path, src/proxy/lean.rs); h2-split-general the same
#                     (the session log writes a JSON line per request to WORK/<case>/sessions.jsonl,
#                     and with a Redis store also XADDs it to a stream)
#   8 nginx-https     nginx HTTPS reverse proxy to the same upstream (NGINX=0 skips)
# HTTP/2 (h2load from nghttp2-client, installed when missing; H2=0 skips), same table:
#   h2-bare, h2-none, h2-split, h2-nginx: h2load -c$CONNS -m$H2_STREAMS over TLS (ALPN h2)
#   against the bare proxy, case 3, case 4 and nginx; p50/p99 from h2load's per-request log.
# SYSCALLS=1 adds system calls per request (perf stat on the proxy; its overhead shows in us/req).
# ONLY="direct bare https-none ..." runs just those cases (the ones issue 11 asks for:
#   ONLY="direct nginx-https bare https-none https-split redis-cache").
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
H2=${H2:-1}
H2_STREAMS=${H2_STREAMS:-1}  # concurrent streams per h2 connection (1 = same concurrency as wrk)
ONLY=${ONLY:-}               # space-separated case names; empty = all
SYSCALLS=${SYSCALLS:-0}      # 1: add system calls per request (perf stat), see syscalls_start
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
KEEP_WORK=${KEEP_WORK:-0}
PATH_UNDER_TEST=/small
HOST=localhost               # tenant hostname; wrk sends it as SNI and Host

LOG_TAG=load
TOOLS="cargo wrk taskset openssl curl python3"
CLK_TCK=$(getconf CLK_TCK)
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- wrk / h2load and result table -----------------------------------------------------------
CASES=()
declare -A RPS P50 P99 ERRS NOTE BUSY USREQ SYSREQ
to_ms() { # 812.00us | 1.23ms | 1.05s | 2.00m → milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}

# want NAME: true if the case is selected (ONLY empty = every case).
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# cpu_ticks PID: utime + stime (clock ticks) of PID and its direct children (nginx's worker).
cpu_ticks() {
    local root=$1 total=0 f line rest pid
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        pid=${f#/proc/}; pid=${pid%/stat}
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest
        if [ "$pid" = "$root" ] || [ "$2" = "$root" ]; then
            total=$((total + ${12} + ${13}))
        fi
    done
    echo "$total"
}
us_per_req() { # TICKS REQUESTS → µs of CPU per request
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else printf "-" }'
}

# SYSCALLS=1: count the proxy's system calls during the measured run (`perf stat -e
# raw_syscalls:sys_enter -p PID`, every thread of the process and its children) → sys/req.
PERF_PID=
syscalls_start() { # PID NAME
    [ "$SYSCALLS" = 1 ] || return 0
    local pids # the process and its direct children (nginx's worker)
    pids=$({ echo "$1"; pgrep -P "$1" || true; } | paste -sd, -)
    perf stat -e raw_syscalls:sys_enter -x, -o "$WORK/syscalls-$2.txt" -p "$pids" >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.2 # perf attaches to the threads before the load starts
}
syscalls_stop() {
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
}
syscalls_per_req() { # NAME REQUESTS
    local f=$WORK/syscalls-$1.txt
    [ -f "$f" ] || { echo -; return 0; }
    awk -F, -v n="$2" '/raw_syscalls:sys_enter/ { if (n > 0 && $1 + 0 > 0) printf "%.2f", $1 / n; else printf "-"; done = 1 }
        END { if (!done) printf "-" }' "$f"
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
redis_note() { # NAME R0 R1 TOTAL: Redis commands per request for redis-* cases
    local name=$1 r0=$2 r1=$3 total=$4
    if [[ $name == redis-* ]] && [ -n "$r0" ] && [ -n "$r1" ] && [ -n "$total" ] && [ "$total" -gt 0 ]; then
        NOTE[$name]=$(awk -v a="$r0" -v b="$r1" -v n="$total" 'BEGIN { split(a, x, " "); split(b, y, " ");
            printf "redis per request: GET %.2f, XADD %.3f, all cmds %.2f", (y[1]-x[1])/n, (y[2]-x[2])/n, (y[3]-x[3])/n }')
    fi
}

# precheck NAME URL LOGFILE CURL_ARGS...: record the case; 1 if its first request failed.
precheck() {
    local name=$1 url=$2 logf=$3
    shift 3
    CASES+=("$name")
    if ! check_request "$url" "$@"; then
        RPS[$name]=FAILED; NOTE[$name]="pre-check failed"
        FAILED=1
        [ -n "$logf" ] && show_log "$logf"
        return 1
    fi
}

# run_case NAME PID URL LOGFILE [wrk args...]: HTTP/1.1 with wrk; µs/req from PID's CPU.
run_case() {
    local name=$1 pid=$2 url=$3 logf=$4 out
    shift 4
    precheck "$name" "$url" "$logf" "$@" || return 0
    if [ "$WARMUP" != 0 ]; then
        taskset -c "$GEN_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" "$@" "$url" >/dev/null 2>&1 || true
    fi
    BUSY[$name]=$(machine_busy)
    log "case $name: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s $url (machine busy before: ${BUSY[$name]}%)"
    local r0 r1 total t0 t1
    r0=$(redis_calls)
    t0=$(cpu_ticks "$pid")
    syscalls_start "$pid" "$name"
    out=$(taskset -c "$GEN_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url" 2>&1) || true
    syscalls_stop
    t1=$(cpu_ticks "$pid")
    r1=$(redis_calls)
    printf '%s\n' "$out" >"$WORK/wrk-$name.txt"
    total=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
    USREQ[$name]=$(us_per_req "$((t1 - t0))" "${total:-0}")
    SYSREQ[$name]=$(syscalls_per_req "$name" "${total:-0}")
    redis_note "$name" "$r0" "$r1" "$total"
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

# run_h2 NAME PID URL LOGFILE [h2load args, e.g. -H ...]: HTTP/2 over TLS (ALPN h2) with
# h2load, same columns; p50/p99 from h2load's per-request log.
run_h2() {
    local name=$1 pid=$2 url=$3 logf=$4 out
    shift 4
    [ "$H2" = 1 ] || return 0
    local curl_args=() a
    for a in "$@"; do [ "$a" = -H ] || curl_args+=(-H "$a"); done
    precheck "$name" "$url" "$logf" --http2 "${curl_args[@]}" || return 0
    if [ "$WARMUP" != 0 ]; then
        taskset -c "$GEN_CPU" h2load -c"$CONNS" -m"$H2_STREAMS" -D"$WARMUP" "$@" "$url" >/dev/null 2>&1 || true
    fi
    BUSY[$name]=$(machine_busy)
    log "case $name: h2load -c$CONNS -m$H2_STREAMS -D$DURATION $url (machine busy before: ${BUSY[$name]}%)"
    local r0 r1 t0 t1 total non2xx
    r0=$(redis_calls)
    t0=$(cpu_ticks "$pid")
    syscalls_start "$pid" "$name"
    out=$(taskset -c "$GEN_CPU" h2load -c"$CONNS" -m"$H2_STREAMS" -D"$DURATION" --log-file="$WORK/h2-$name.log" "$@" "$url" 2>&1) || true
    syscalls_stop
    t1=$(cpu_ticks "$pid")
    r1=$(redis_calls)
    printf '%s\n' "$out" >"$WORK/h2load-$name.txt"
    # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    total=$(printf '%s\n' "$out" | awk '/^requests:/ {print $8}')
    # "status codes: N 2xx, N 3xx, N 4xx, N 5xx"
    non2xx=$(printf '%s\n' "$out" | awk '/^status codes:/ { print $5 + $7 + $9 }')
    USREQ[$name]=$(us_per_req "$((t1 - t0))" "${total:-0}")
    SYSREQ[$name]=$(syscalls_per_req "$name" "${total:-0}")
    redis_note "$name" "$r0" "$r1" "$total"
    # "finished in 5.00s, 12345.60 req/s, 1.2MB/s"
    RPS[$name]=$(printf '%s\n' "$out" | awk '/^finished in/ { print $4 }')
    # per-request log lines: start (µs since epoch) <TAB> status <TAB> duration (µs)
    read -r "P50[$name]" "P99[$name]" < <(sort -n -k3,3 "$WORK/h2-$name.log" 2>/dev/null | awk '{ d[NR] = $3 } END {
        if (NR == 0) { print "- -"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1;
        printf "%.3f %.3f\n", d[i50] / 1000, d[i99] / 1000 }')
    [ "${non2xx:-0}" = 0 ] || ERRS[$name]="non2xx=$non2xx "
    if [ -z "${RPS[$name]}" ] || [ "${total:-0}" = 0 ]; then
        RPS[$name]=FAILED; NOTE[$name]="h2load produced no result (see $WORK/h2load-$name.txt)"
        FAILED=1
        printf '%s\n' "$out" >&2
    elif [ "${non2xx:-0}" != 0 ]; then
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
URL() { echo "https://$HOST:$1$PATH_UNDER_TEST"; }

# 1. direct
want direct && run_case direct "$UP_PID" "http://127.0.0.1:$UP_PORT$PATH_UNDER_TEST" "$WORK/upstream.log"

# 0. bare Pingora (examples/bare_proxy.rs)
if want bare || want h2-bare; then
    if start_bare; then
        want bare && run_case bare "$BARE_PID" "$(URL "$BARE_PORT")" "$WORK/bare/bare.log"
        want h2-bare && run_h2 h2-bare "$BARE_PID" "$(URL "$BARE_PORT")" "$WORK/bare/bare.log"
    else
        FAILED=1; CASES+=(bare); RPS[bare]=FAILED
    fi
    stop_pid "$BARE_PID"
fi

# 0b. the same work on pingora-core alone (examples/bare_proxy --lean); only when asked for
if [ -n "$ONLY" ] && { want lean || want h2-lean; }; then
    if start_bare --lean; then
        want lean && run_case lean "$BARE_PID" "$(URL "$BARE_PORT")" "$WORK/bare/bare.log"
        want h2-lean && run_h2 h2-lean "$BARE_PID" "$(URL "$BARE_PORT")" "$WORK/bare/bare.log"
    else
        FAILED=1; CASES+=(lean); RPS[lean]=FAILED
    fi
    stop_pid "$BARE_PID"
fi

# 2 + 3. auth: none, one process with both listeners
if want http-none || want https-none || want h2-none; then
    write_config plain none "$(EMBEDDED plain)" "" http
    if start_tessera plain "$CFG"; then
        P=${TPID[plain]}
        want http-none && run_case http-none "$P" "http://$HOST:${HTTP_PORT[plain]}$PATH_UNDER_TEST" "$WORK/plain/tessera.log"
        want https-none && run_case https-none "$P" "$(URL "${HTTPS_PORT[plain]}")" "$WORK/plain/tessera.log"
        want h2-none && run_h2 h2-none "$P" "$(URL "${HTTPS_PORT[plain]}")" "$WORK/plain/tessera.log"
    else
        FAILED=1; CASES+=(https-none); RPS[https-none]=FAILED
    fi
    stop_tessera plain
fi

# split-token cases: NAME STORE EXTRA [H2NAME]
split_case() {
    local name=$1 store=$2 extra=$3 h2name=${4:-}
    want "$name" || { [ -n "$h2name" ] && want "$h2name"; } || return 0
    write_config "$name" split_token "$store" "$extra"
    if start_tessera "$name" "$CFG" && mint "$name"; then
        local auth="Authorization: Bearer ${PART_A[$name]}" url
        url=$(URL "${HTTPS_PORT[$name]}")
        if want "$name"; then
            run_case "$name" "${TPID[$name]}" "$url" "$WORK/$name/tessera.log" -H "$auth"
        fi
        if [ -n "$h2name" ] && want "$h2name"; then
            run_h2 "$h2name" "${TPID[$name]}" "$url" "$WORK/$name/tessera.log" -H "$auth"
        fi
    else
        FAILED=1; CASES+=("$name"); RPS[$name]=FAILED; NOTE[$name]="start-up or mint failed (see $WORK/$name/tessera.log)"
    fi
    stop_tessera "$name"
}

# 4. split token, embedded store, session log + anomaly on (defaults)
split_case https-split "$(EMBEDDED https-split)" "" h2-split

# 5 + 6. Redis store
if want redis-cache || want redis-nocache; then
    start_redis
    split_case redis-cache "{ kind: redis, url: \"redis://127.0.0.1:$REDIS_PORT/0\", prefix: \"bench5:\" }" ""
    split_case redis-nocache "{ kind: redis, url: \"redis://127.0.0.1:$REDIS_PORT/0\", prefix: \"bench6:\", cache: { enabled: false } }" ""
fi

# 7. split token without session log and anomaly detection
split_case split-nolog "$(EMBEDDED split-nolog)" "$NOLOG"

# 7b. split token on Pingora's work-stealing runtime (Tessera's default is work_stealing: false)
split_case split-steal "$(EMBEDDED split-steal)" "work_stealing: true"

# 7c. split token through pingora-proxy only (case 4 takes Tessera's lean path)
split_case split-general "$(EMBEDDED split-general)" "lean_path: false" h2-split-general

# 8. nginx as an HTTPS reverse proxy (peer comparison), the same header work as the others
if [ "$NGINX" = 1 ] && [ -x "$NGINX_BIN" ] && { want nginx-https || want h2-nginx; }; then
    NG=$WORK/nginx
    mkdir -p "$NG/logs" "$NG/tmp"
    free_port NG_PORT
    user_line=""
    [ "$(id -u)" = 0 ] && user_line="user root;"
    cat >"$NG/nginx.conf" <<NGINX_CONF
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
        listen 127.0.0.1:$NG_PORT ssl http2;
        server_name $HOST;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 10000000;
        http2_max_requests 10000000;
        keepalive_timeout 60s;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Tenant-Id bench;
            proxy_set_header Authorization "Bearer nginx-upstream-token";
        }
    }
}
NGINX_CONF
    taskset -c "$PROXY_CPU" "$NGINX_BIN" -p "$NG" -e "$NG/logs/error.log" -c "$NG/nginx.conf" >"$NG/stdout.log" 2>&1 &
    NG_PID=$!
    PIDS+=("$NG_PID")
    if wait_until "$NG_PID" "nginx" "$NG/logs/error.log" \
        http_ok -k --resolve "$HOST:$NG_PORT:127.0.0.1" "$(URL "$NG_PORT")"; then
        log "nginx ready on 127.0.0.1:$NG_PORT (pid $NG_PID, CPU $PROXY_CPU)"
        want nginx-https && run_case nginx-https "$NG_PID" "$(URL "$NG_PORT")" "$NG/logs/error.log"
        want h2-nginx && run_h2 h2-nginx "$NG_PID" "$(URL "$NG_PORT")" "$NG/logs/error.log"
    else
        FAILED=1; CASES+=(nginx-https); RPS[nginx-https]=FAILED
    fi
    stop_pid "$NG_PID"
fi

# --- report ----------------------------------------------------------------------------------
declare -A LABEL=(
    [direct]="1 upstream direct (http)"
    [bare]="0 bare pingora https (examples/bare_proxy)"
    [lean]="0b pingora-core only (bare_proxy --lean)"
    [http-none]="2 tessera http, auth none"
    [https-none]="3 tessera https, auth none"
    [https-split]="4 tessera https, split token (embedded)"
    [redis-cache]="5 as 4, redis store, cache on (warm)"
    [redis-nocache]="6 as 4, redis store, cache off"
    [split-nolog]="7 as 4, no session log/anomaly"
    [split-steal]="7b as 4, work_stealing: true"
    [split-general]="7c as 4, lean_path: false (pingora-proxy)"
    [h2-split-general]="h2 7c as 4, lean_path: false"
    [nginx-https]="8 nginx https reverse proxy"
    [h2-bare]="h2 0 bare pingora"
    [h2-lean]="h2 0b pingora-core only (--lean)"
    [h2-none]="h2 3 tessera, auth none"
    [h2-split]="h2 4 tessera, split token (embedded)"
    [h2-nginx]="h2 8 nginx"
)
echo
echo "Tessera loopback load test (path $PATH_UNDER_TEST, warm-up ${WARMUP}s per case)"
echo "HTTP/1.1: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s; HTTP/2 (h2 rows): h2load -c$CONNS -m$H2_STREAMS -D$DURATION"
echo "CPU $GEN_CPU: load generator + echo upstream$([ -n "$REDIS_PID" ] && [ "$REDIS_CPU" = "$GEN_CPU" ] && echo ' + redis'); CPU $PROXY_CPU: proxy (threads: 1)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-42s %9s %8s %8s %8s %8s %8s %7s %6s  %s\n' case "req/s" "p50 ms" "p99 ms" "/direct" "us/req" "cpu/bare" "sys/req" "busy%" "errors / notes"
printf '%-42s %9s %8s %8s %8s %8s %8s %7s %6s  %s\n' "------------------------------------------" "---------" "--------" "--------" "--------" "--------" "--------" "-------" "------" "--------------"
for c in "${CASES[@]}"; do
    base=bare
    [[ $c == h2-* ]] && base=h2-bare
    printf '%-42s %9s %8s %8s %8s %8s %8s %7s %6s  %s\n' "${LABEL[$c]:-$c}" "${RPS[$c]:-}" "${P50[$c]:--}" "${P99[$c]:--}" \
        "$(ratio "${RPS[$c]}" "${RPS[direct]:-}")" "${USREQ[$c]:--}" "$(ratio "${USREQ[$c]:-}" "${USREQ[$base]:-}")" \
        "${SYSREQ[$c]:--}" "${BUSY[$c]:--}" "${ERRS[$c]:-}${NOTE[$c]:+ ${NOTE[$c]}}"
done
echo
echo "(us/req = CPU time, user + system, of the process under test (and its children) during the"
echo " measured run / requests served: the echo upstream for direct, the proxy otherwise; Redis's"
echo " own CPU is not in the redis rows. cpu/bare = us/req / the bare Pingora row's (h2 rows: the h2"
echo " bare row's). busy% = whole-machine CPU use in the second before the case, from processes"
echo " other than the load test's; more than a few % means other work skewed the numbers)"
echo "raw wrk/h2load output and logs: $WORK$([ "$KEEP_WORK" = 1 ] || [ "$FAILED" != 0 ] || echo ' (deleted on exit; KEEP_WORK=1 keeps it)')"
[ "$FAILED" = 0 ] || { log "one or more cases failed (see above)"; exit 1; }
