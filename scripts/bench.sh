#!/usr/bin/env bash
# The benchmark, in one command: builds the release binaries and runs cache-layer-bench,
# which starts Apache Kafka (fetched from Maven Central with Maven when missing, one KRaft
# node in a JVM of its own), its own redis-server and the release daemon. Results go to
# bench-results.json and, as a table, to standard output.
#
#   scripts/bench.sh                     # 1,000,000 messages through Apache Kafka
#   scripts/bench.sh --messages 200000   # any cache-layer-bench flag
#   scripts/bench.sh --broker mock --messages 200000 --partitions 36
#
# --broker mock uses librdkafka's in-process mock cluster instead; it keeps about 5 MB per
# partition, so large runs need fewer messages or more partitions (the benchmark refuses
# to report when the broker lost messages). --bootstrap HOST:PORT uses a running broker.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-install.sh

need redis-server redis-server
need java openjdk-17-jre-headless
need mvn maven
install_needed
cargo build --release --quiet --workspace --bins
exec target/release/cache-layer-bench "$@"
