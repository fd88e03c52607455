#!/usr/bin/env bash
# Weft in the shared side-by-side proxy comparison (../shared/bench/peers/run.sh): the same nginx
# backend, the same nginx and haproxy peers, the same load generators and interleaving, with Weft
# added as the candidate. Two runs:
#   weft      one proxy (bench/weft-peer.yaml, 127.0.0.1:18083 -> backend), --threads 1
#   weft2hop  client sidecar (18084) -> HTTP/2 mesh hop -> server sidecar (18085) -> backend,
#             two processes, each --threads 1; CPU and RSS are the sum of both
#   weft2hop-mtls  the same two sidecars as a real mesh: a `weft control --tls` (started before
#             the run, not measured: it is idle once it has pushed) issues both certificates and
#             pushes the config (bench/mtls/); the hop is mTLS (STRICT), L7 routing and metrics on
# Then bench/targets.py prints each figure of issue 12 / BENCHMARKS.md beside its target: met / missed.
# Knobs (passed through to the peers script): DUR=5 REPS=3 CONNS=32 RATE=4800 WARM=2 FIXED=auto
#   RESULTS=/tmp/weft-bench (each invocation writes RESULTS/<timestamp>/{weft,weft2hop})
#   ONLY=weft|weft2hop|weft2hop-mtls runs one of them; ONLY=routes runs the one-proxy path with 100
#   and 1,000 routes configured; ONLY=telemetry runs the one-proxy path four ways: as configured
#   (metrics only), with JSON access logs to a file, and with tracing at 1 % and at 100 % to a
#   local OTLP collector (weft-test-support's otlp-sink example, counting spans).
#   CARGO_TARGET_DIR (default $HOME/.cache/weft/target).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}
export DUR=${DUR:-5} REPS=${REPS:-3} CONNS=${CONNS:-32} RATE=${RATE:-4800} WARM=${WARM:-2}
export FIXED=${FIXED:-auto}
ONLY=${ONLY:-}

# The peers script, next to this clone or where WEFT_SHARED says.
PEERS="$ROOT/../shared/bench/peers/run.sh"
if [ ! -f "$PEERS" ]; then
  PEERS="${WEFT_SHARED:?shared/bench/peers not found next to the clone: set WEFT_SHARED}/bench/peers/run.sh"
fi
[ -f "$PEERS" ] || { echo "missing $PEERS" >&2; exit 1; }

# Load generators and peers from apt, only when missing.
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
command -v pgrep >/dev/null || missing+=(procps)
command -v ss >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing benchmark dependencies: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# oha gives open-loop percentiles with coordinated-omission correction (BENCHMARKS.md). Built
# once from crates.io (~10 minutes) and kept in ~/.cargo/bin; never rebuilt per run.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
  echo "installing oha (cargo install oha --locked; once, kept in ~/.cargo/bin)"
  cargo install oha --locked --quiet || echo "note: oha did not install; the fixed-rate run falls back to h2load (no percentiles)"
fi

cargo build --release --locked -p weft-cli
WEFT="$CARGO_TARGET_DIR/release/weft"
[ -x "$WEFT" ] || { echo "no binary at $WEFT" >&2; exit 1; }

# The peers script checks its own ports and the candidate's; the others Weft binds are checked here.
for p in 18083 18084 18085 18086 18087 18090 18091 18092 18093 18094 18095 18096 18097; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "port $p already in use" >&2; exit 1; fi
done

BASE=${RESULTS:-/tmp/weft-bench}/$(date +%Y%m%d-%H%M%S)
mkdir -p "$BASE"
B="$ROOT/bench"

run_one() {  # $1 name, $2 url, $3 command
  echo "=== $1: $3"
  CANDIDATE_NAME=$1 CANDIDATE_URL=$2 CANDIDATE_CMD=$3 OUT="$BASE/$1" "$PEERS"
}

if [ -z "$ONLY" ] || [ "$ONLY" = weft ]; then
  # `exec`: the proxy replaces the shell, so the measured process is the proxy itself.
  run_one weft http://127.0.0.1:18083/ \
    "exec '$WEFT' proxy --threads 1 --config '$B/weft-peer.yaml'"
fi
# The same one-proxy path with 100 and 1,000 routes on the service (BENCHMARKS.md: RSS with 100
# and 1,000 routes): each rule a path prefix and a header match, the request matching only the
# last one, so every request walks the whole table. Run with ONLY=routes (not in the default set).
routes_config() {  # $1 rule count -> a config file
  local n=$1 out="$BASE/weft-peer-$1-routes.yaml"
  python3 - "$n" "$B/weft-peer.yaml" > "$out" <<'PY'
import json, sys
n, base = int(sys.argv[1]), open(sys.argv[2]).read()
fqdn = "backend.default.svc.cluster.local"
rules = [{"origin": {"kind": "VirtualService", "namespace": "default", "name": "backend"},
          "index": i,
          "matches": [{"path": {"prefix": {"value": f"/r{i}/"}},
                       "headers": [{"name": "x-tenant", "value": {"exact": f"t{i}"}}]}],
          "action": {"forward": [{"service": fqdn, "weight": 100}]}}
         for i in range(n - 1)]
rules.append({"origin": {"kind": "VirtualService", "namespace": "default", "name": "backend"},
              "index": n - 1, "action": {"forward": [{"service": fqdn, "weight": 100}]}})
table = json.dumps({"port": 80, "table": {"rules": rules}})
print(base.replace("    ports: [{port: 80, protocol: http}]",
                   "    ports: [{port: 80, protocol: http}]\n    routes: [" + table + "]"))
PY
  echo "$out"
}
if [ "$ONLY" = routes ]; then
  for n in 100 1000; do
    run_one "weft$n" http://127.0.0.1:18083/ \
      "exec '$WEFT' proxy --threads 1 --config '$(routes_config "$n")'"
  done
fi
# The cost of telemetry (issue 13): the same one-proxy path with access logs on (JSON, to a file)
# and with tracing at 1 % and 100 %, beside the default, each a run of its own (the peers run
# again each time: read the ratios within a run, and the weft rows across runs).
telemetry_config() {  # $1 name, $2 telemetry section as one line of YAML -> a config file
  local out="$BASE/weft-peer-$1.yaml"
  { cat "$B/weft-peer.yaml"; echo "telemetry: $2"; } > "$out"
  echo "$out"
}
if [ "$ONLY" = telemetry ]; then
  cargo build --release --locked -p weft-test-support --example otlp-sink
  SINK_ADDR=127.0.0.1:18093
  "$CARGO_TARGET_DIR/release/examples/otlp-sink" "$SINK_ADDR" > "$BASE/otlp-sink.log" &
  SINK_PID=$!
  trap 'kill -INT $SINK_PID 2>/dev/null || true' EXIT
  # Only the tracing runs name the collector: the default run exports nothing (its 1 % of
  # traces is sampled but has nowhere to go), as a proxy without a collector.
  OTEL="env OTEL_EXPORTER_OTLP_ENDPOINT=http://$SINK_ADDR"
  run_one weft http://127.0.0.1:18083/ \
    "exec '$WEFT' proxy --threads 1 --config '$B/weft-peer.yaml'"
  run_one weftlog http://127.0.0.1:18083/ \
    "exec '$WEFT' proxy --threads 1 --config '$(telemetry_config log "{accessLogs: [{format: json, path: $BASE/access.json}]}")'"
  run_one wefttrace1 http://127.0.0.1:18083/ \
    "exec $OTEL '$WEFT' proxy --threads 1 --config '$(telemetry_config trace1 "{tracing: {randomSamplingPercentage: 1}}")'"
  run_one wefttrace100 http://127.0.0.1:18083/ \
    "exec $OTEL '$WEFT' proxy --threads 1 --config '$(telemetry_config trace100 "{tracing: {randomSamplingPercentage: 100}}")'"
  kill -INT $SINK_PID 2>/dev/null || true
  wait $SINK_PID 2>/dev/null || true
  echo "access-log lines written: $(wc -l < "$BASE/access.json" 2>/dev/null || echo 0)"
  echo "spans the collector received: $(tail -n1 "$BASE/otlp-sink.log")"
fi
if [ -z "$ONLY" ] || [ "$ONLY" = weft2hop ]; then
  # The server sidecar is started in the background by the shell, which then becomes the client
  # sidecar: the server is the client's child, so the peers script's "PID and its descendants"
  # counts (and stops) both.
  run_one weft2hop http://127.0.0.1:18084/ \
    "'$WEFT' proxy --threads 1 --config '$B/weft-two-hop-server.yaml' & exec '$WEFT' proxy --threads 1 --config '$B/weft-two-hop.yaml'"
fi

if [ -z "$ONLY" ] || [ "$ONLY" = weft2hop-mtls ]; then
  # The control plane runs beside the measured processes: its CPU is spent before the load starts
  # (issuing two certificates, one push) and it is not part of the data path.
  M="$BASE/mtls"
  mkdir -p "$M/state"
  "$WEFT" control --tls --config-dir "$B/mtls/mesh" --state-dir "$M/state" \
    --listen 127.0.0.1:18095 --admin 127.0.0.1:18096 >"$M/control.log" 2>&1 &
  CONTROL_PID=$!
  trap 'kill $CONTROL_PID 2>/dev/null || true' EXIT
  for _ in $(seq 100); do [ -f "$M/state/trust-bundle.pem" ] && grep -q listening "$M/control.log" && break; sleep 0.1; done
  for w in backend bench-client; do
    (umask 077; "$WEFT" token create --workload "$w" --service-account "$w" --state-dir "$M/state" >"$M/$w.token")
  done
  sidecar() {  # $1 bootstrap yaml, $2 workload
    echo "'$WEFT' proxy --threads 1 --config '$B/mtls/$1' --control http://127.0.0.1:18095 --token-file '$M/$2.token' --trust-anchor '$M/state/trust-bundle.pem'"
  }
  run_one weft2hop-mtls http://127.0.0.1:18086/ \
    "$(sidecar server.yaml backend) & exec $(sidecar client.yaml bench-client)"
  kill "$CONTROL_PID" 2>/dev/null || true
fi

echo
echo "results in $BASE"
for d in "$BASE"/*/; do [ -f "$d/summary.md" ] && echo "  $d/summary.md"; done
echo
python3 "$B/targets.py" "$BASE" | tee "$BASE/targets.md"
