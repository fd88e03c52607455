#!/usr/bin/env bash
# Control-plane convergence (shared/BENCHMARKS.md, "Control plane"): `weft control` as its own
# process, N simulated proxies (real gRPC clients of the discovery API, one HTTP/2 connection
# each) in the benchmark process, one VirtualService edited, time until every proxy has ACKed
# the new version, and the control plane's RSS. Loopback only; everything it starts, it stops.
#
#   bench/convergence.sh                              # N = 10, 100, 1000; 3 changes each
#   bench/convergence.sh --proxies 1000 --rounds 5    # any flag of the example
set -euo pipefail
cd "$(dirname "$0")/.."
# Outside the clone, so a later run on the same machine reuses the build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}

cargo build --release -p weft-cli -p weft-control --examples
cargo build --release -p weft-cli
# Each simulated proxy is one socket here and one in the control plane (the example also raises
# its own soft limit; this covers the control plane).
ulimit -n "$(ulimit -Hn | awk '{ print ($1 == "unlimited" || $1 > 8192) ? 8192 : $1 }')"
exec "$CARGO_TARGET_DIR/release/examples/convergence" --weft "$CARGO_TARGET_DIR/release/weft" "$@"
