#!/usr/bin/env bash
# The test command: installs what the build and the tests need when it is missing
# (through apt: a C toolchain and make for the bundled librdkafka and OpenSSL,
# redis-server with redis-cli, prometheus and promtool from Debian's prometheus package,
# openssl and stunnel4 for the TLS tests; PyYAML and kubernetes-validate;
# cargo-nextest and the tansu broker from crates.io), then runs the whole suite. Tests start their own
# redis-server processes on free loopback ports; nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-install.sh

need redis-server redis-server
need redis-cli redis-tools
need_build_tools
need promtool prometheus
need python3 python3 python3-yaml
need openssl openssl
need stunnel4 stunnel4
install_needed
# The compose file is read with PyYAML (there is no Docker engine to ask).
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
# The Kubernetes manifests are checked against the Kubernetes schemas.
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet kubernetes-validate
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
# tansu, a Kafka-compatible broker with a TLS listener and SASL, for the Kafka security
# tests (librdkafka's mock cluster has neither); about 8 minutes to build, once.
command -v tansu >/dev/null || cargo install tansu --features dynostore --locked --quiet

cargo nextest run --workspace --all-targets --no-fail-fast "$@"
