#!/usr/bin/env bash
# The test command: installs what the build and the tests need when it is missing
# (through apt: a C toolchain and make for the bundled librdkafka, redis-server with
# redis-cli, prometheus and promtool from Debian's prometheus package, openssl; PyYAML;
# cargo-nextest from crates.io), then runs the whole suite. Tests start their own
# redis-server processes on free loopback ports; nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-install.sh

need redis-server redis-server
need redis-cli redis-tools
need cc build-essential
need make build-essential
need promtool prometheus
need python3 python3 python3-yaml
need openssl openssl
install_needed
# The compose file is read with PyYAML (there is no Docker engine to ask).
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

cargo nextest run --workspace --all-targets --no-fail-fast "$@"
