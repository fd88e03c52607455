#!/usr/bin/env bash
# Installs what Weft's tests drive as real peers, when missing: curl (HTTP/1.1), nghttp (HTTP/2),
# python3 grpcio (a real gRPC client and server), python3 websockets (a real WebSocket peer),
# iptables and iproute2 (transparent capture inside network namespaces), openssl s_client (a
# real TLS peer for the mTLS tests).
set -euo pipefail

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v nghttp >/dev/null || missing+=(nghttp2-client)
command -v iptables >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
command -v pgrep >/dev/null || missing+=(procps)
command -v openssl >/dev/null || missing+=(openssl)
command -v setpriv >/dev/null || missing+=(util-linux)
/usr/bin/python3 -c 'import grpc' 2>/dev/null || missing+=(python3-grpcio)
/usr/bin/python3 -c 'import websockets' 2>/dev/null || missing+=(python3-websockets)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
