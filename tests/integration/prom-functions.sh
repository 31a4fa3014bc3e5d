# thunder integration tests — a real Prometheus on loopback (Debian's
# prometheus package), scraping thunder-api and thunderd control endpoints.
# Sourced after functions.sh.

# start_prometheus API_URL TOKEN_FILE NODE_URL...
#
# Writes a configuration with two jobs, "thunder-api" (API_URL's /metrics,
# no token) and "thunderd" (each NODE_URL's /metrics with the bearer token
# in TOKEN_FILE, as deploy/prometheus/thunder.yml does), scraping every
# second, starts prometheus on a free port with its data in $tmpdir and
# waits until it is ready.  Sets prom_url.
start_prometheus ()
{
    local api=$1 token=$2 u targets=""
    shift 2
    for u in "$@"; do targets+="'${u#http://}',"; done
    mkdir -p "$tmpdir/prometheus"
    cat >"$tmpdir/prometheus/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: thunder-api
    static_configs:
      - targets: ['${api#http://}']
  - job_name: thunderd
    authorization:
      type: Bearer
      credentials_file: $token
    static_configs:
      - targets: [${targets%,}]
YML
    promtool check config "$tmpdir/prometheus/prometheus.yml" >/dev/null ||
        fail "promtool: the test's Prometheus configuration is invalid"
    local p
    p=$(free_port)
    prometheus --config.file="$tmpdir/prometheus/prometheus.yml" \
        --storage.tsdb.path="$tmpdir/prometheus/data" \
        --web.listen-address="127.0.0.1:$p" \
        >"$tmpdir/prometheus/log" 2>&1 &
    prom_pid=$!
    cleanup_fn kill "$prom_pid"
    prom_url=http://127.0.0.1:$p
    for _ in $(seq 100); do
        curl -sf "$prom_url/-/ready" >/dev/null 2>&1 && return 0
        kill -0 "$prom_pid" 2>/dev/null ||
            fail "prometheus exited: $(tail -n 5 "$tmpdir/prometheus/log")"
        sleep 0.2
    done
    fail "prometheus not ready after 20 s: $(tail -n 5 "$tmpdir/prometheus/log")"
}

# prom_query EXPR  — prints the value of an instant query that yields one
# sample (nothing if none).
prom_query ()
{
    curl -sf --get --data-urlencode "query=$1" "$prom_url/api/v1/query" |
        jq -r '.data.result[0].value[1] // empty'
}

# prom_wait WHAT EXPR TIMEOUT  — waits until EXPR (a query with a
# comparison, e.g. 'sum(x) > 0') yields a sample; fails with WHAT.
prom_wait ()
{
    local what=$1 expr=$2 timeout=$3 v t0
    t0=$(now_ms)
    while (( $(now_ms) - t0 < timeout * 1000 )); do
        v=$(prom_query "$expr")
        [ -n "$v" ] && { echo "prometheus: $what: $v"; return 0; }
        sleep 0.5
    done
    fail "prometheus: $what: '$expr' gave no sample in $timeout s; targets: $(curl -s "$prom_url/api/v1/targets" | jq -c '[.data.activeTargets[] | {job: .labels.job, health, lastError}]')"
}

# check_exposition URL [TOKEN_FILE]  — promtool check metrics on URL's body.
check_exposition ()
{
    local url=$1 tok=${2:-} out
    local -a auth=()
    [ -n "$tok" ] && auth=(-H "Authorization: Bearer $(cat "$tok")")
    curl -sf "${auth[@]}" "$url" >"$tmpdir/exposition" ||
        fail "GET $url failed"
    out=$(promtool check metrics <"$tmpdir/exposition" 2>&1) ||
        fail "promtool check metrics $url: $out"
}
