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
# tansu is installed on first use (`cargo install tansu --features dynostore`, about 8
# minutes on 2 cores). BROKER=mock uses librdkafka's in-process mock cluster instead; it
# keeps about 5 MB per partition, so large runs need fewer messages or more partitions
# (the benchmark refuses to report when the broker lost messages).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-install.sh

need redis-server redis-server
install_needed
cargo build --release --quiet --workspace --bins

broker="${BROKER:-tansu}"
args=()
if [ "$broker" != mock ] && ! command -v tansu >/dev/null; then
  echo "installing tansu, the broker of the headline figures (about 8 minutes)" >&2
  cargo install tansu --features dynostore --locked --quiet
fi
if [ "$broker" != mock ]; then
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
  args+=(--broker-pid "$tansu_pid")
fi
# Not exec: the EXIT trap stops tansu afterwards.
target/release/cache-layer-bench "${args[@]}" "$@"
