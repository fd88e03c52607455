#!/usr/bin/env bash
# Two or more Weft binaries against each other and nginx, interleaved: the peers' nginx backend
# (1 KiB) and nginx proxy (../shared/bench/peers), each Weft binary as one proxy
# (bench/weft-peer.yaml, --threads 1); wrk -t1 -c32 -d6 per measurement, ROUNDS rounds (default
# 3); prints CPU µs per request (process CPU / requests) and RSS halfway through the load.
# For build and allocator comparisons (bench/README.md, 2026-12-07), not a replacement for run.sh.
#   bench/ab.sh thin=/path/to/weft fat=/other/weft
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS="$ROOT/../shared/bench/peers"
[ -d "$PEERS" ] || PEERS="${WEFT_SHARED:?set WEFT_SHARED to shared/}/bench/peers"
[ $# -ge 1 ] || { echo "usage: bench/ab.sh NAME=BINARY [NAME=BINARY ...]" >&2; exit 2; }
RUN=$(mktemp -d /tmp/weft-ab.XXXXXX)
mkdir -p "$RUN/backend/tmp" "$RUN/proxy/tmp"
nginx -p "$RUN/backend" -c "$PEERS/nginx-backend.conf" 2>"$RUN/backend.err" &
NG=$!
trap 'kill $NG 2>/dev/null || true' EXIT
sleep 0.5
measure() { # name pid port
  wrk -t1 -c32 -d1 "http://127.0.0.1:$3/" > /dev/null
  local t0 t1 w rss req rps
  t0=$(awk '{print $14+$15}' "/proc/$2/stat")
  wrk -t1 -c32 -d6 "http://127.0.0.1:$3/" > "$RUN/$1.wrk" &
  w=$!; sleep 3; rss=$(awk '/VmRSS/{print $2}' "/proc/$2/status"); wait $w
  t1=$(awk '{print $14+$15}' "/proc/$2/stat")
  req=$(grep -oE "[0-9]+ requests" "$RUN/$1.wrk" | grep -oE "[0-9]+")
  rps=$(awk '/Requests\/sec/{print $2}' "$RUN/$1.wrk")
  echo "$1 rps=$rps cpu_us_per_req=$(python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/$req,2))") rss_kb=$rss"
}
for round in $(seq "${ROUNDS:-3}"); do
  nginx -p "$RUN/proxy" -c "$PEERS/nginx-proxy.conf" 2>>"$RUN/proxy.err" &
  NP=$!; sleep 0.7
  measure nginx "$(pgrep -P $NP | head -1)" 18081
  kill $NP; wait $NP 2>/dev/null || true
  for arg in "$@"; do
    name=${arg%%=*}; bin=${arg#*=}
    "$bin" proxy --threads 1 --config "$ROOT/bench/weft-peer.yaml" > /dev/null 2>&1 &
    W=$!; sleep 1
    measure "$name" $W 18083
    kill $W; wait $W 2>/dev/null || true
  done
done
