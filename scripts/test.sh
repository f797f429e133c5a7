#!/usr/bin/env bash
# The test command: installs what the build and the tests need when it is missing
# (through apt: a C toolchain and make for the bundled librdkafka and OpenSSL,
# redis-server with redis-cli, prometheus and promtool from Debian's prometheus package,
# openssl for the TLS tests, a Java runtime and Maven for Apache Kafka; PyYAML and
# kubernetes-validate; cargo-nextest from crates.io), then runs the whole suite against
# Apache Kafka: the testkit fetches it from Maven Central once (into
# ~/.cache/cache-layer/), and one broker, started here, is shared by the tests that only
# need a broker. Then the Python package's build, checks and tests (scripts/python.sh,
# which installs maturin, pytest, mypy, ruff and redis-py in a virtual environment of its
# own). Tests start their own redis-server processes on free loopback ports; nothing
# needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-install.sh

need redis-server redis-server
need redis-cli redis-tools
need_build_tools
need promtool prometheus
need python3 python3 python3-yaml
# Virtual environments for the Python package (Debian's python3 has them apart).
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
need openssl openssl
need java openjdk-17-jre-headless
need mvn maven
install_needed
# The compose file is read with PyYAML (there is no Docker engine to ask).
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
# The Kubernetes manifests are checked against the Kubernetes schemas.
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet kubernetes-validate
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

# The shared broker: fetched and started by the testkit's `cache-layer-dev kafka`, which
# prints its version and address, and stopped when this script exits.
cargo build --quiet -p cache-layer-testkit --bin cache-layer-dev
kafka_dir="$(mktemp -d)"
"${CARGO_TARGET_DIR:-target}/debug/cache-layer-dev" kafka --ready-file "$kafka_dir/bootstrap" &
kafka_pid=$!
trap 'kill "$kafka_pid" 2>/dev/null; wait "$kafka_pid" 2>/dev/null; rm -rf "$kafka_dir"' EXIT
until [ -s "$kafka_dir/bootstrap" ]; do
  kill -0 "$kafka_pid" 2>/dev/null || { echo "Apache Kafka did not start" >&2; exit 1; }
  sleep 0.5
done
CACHE_LAYER_TEST_KAFKA="$(cat "$kafka_dir/bootstrap")"
export CACHE_LAYER_TEST_KAFKA

status=0
cargo nextest run --workspace --all-targets --no-fail-fast "$@" || status=$?
scripts/python.sh || status=$?
exit "$status"
