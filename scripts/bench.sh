#!/usr/bin/env bash
# The benchmark, in one command: builds the release binaries, starts tansu (a
# Kafka-compatible broker in Rust, as a separate process) when it is installed, and runs
# cache-layer-bench, which starts its own redis-server and the release daemon. Results go
# to bench-results.json and, as a table, to standard output.
#
#   scripts/bench.sh                     # 1,000,000 messages through tansu (or the mock)
#   scripts/bench.sh --messages 200000   # any cache-layer-bench flag
#   BROKER=mock scripts/bench.sh --messages 200000 --partitions 36
#
# tansu: `cargo install tansu --features dynostore` (about 8 minutes on 2 cores). Without
# it, librdkafka's in-process mock cluster is used; it keeps about 5 MB per partition, so
# large runs need fewer messages or more partitions (the benchmark refuses to report when
# the broker lost messages).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || {
  echo "redis-server is missing: apt-get install redis-server" >&2
  exit 1
}
cargo build --release --quiet --bins

broker="${BROKER:-auto}"
args=()
if [ "$broker" != mock ] && command -v tansu >/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log=$(mktemp)
  tansu broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
  tansu_pid=$!
  trap 'kill $tansu_pid 2>/dev/null || true; rm -f "$log"' EXIT
  for _ in $(seq 100); do
    grep -q "ready" "$log" && break
    sleep 0.1
  done
  args+=(--bootstrap "127.0.0.1:$port" --broker-name "tansu $(tansu --version 2>/dev/null | awk '{print $2}'), memory storage, separate process")
elif [ "$broker" = tansu ]; then
  echo "BROKER=tansu but tansu is not installed: cargo install tansu --features dynostore" >&2
  exit 1
fi
exec target/release/cache-layer-bench "${args[@]}" "$@"
