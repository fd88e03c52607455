#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, and end to end against real
# processes: curl, nghttp, python grpcio/websockets, iptables in network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
# Outside the clone, so a later run on the same machine reuses the build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
