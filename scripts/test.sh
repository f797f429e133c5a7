#!/usr/bin/env bash
# The test command: installs what the build and the tests need when it is missing
# (through apt: a C toolchain and make for the bundled librdkafka, redis-server with
# redis-cli, prometheus and promtool from Debian's prometheus package, openssl; PyYAML;
# cargo-nextest from crates.io), then runs the whole suite. Tests start their own
# redis-server processes on free loopback ports; nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
{ command -v cc && command -v make; } >/dev/null || missing+=(build-essential)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v promtool >/dev/null || missing+=(prometheus)
command -v python3 >/dev/null || missing+=(python3 python3-yaml)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The compose file is read with PyYAML (there is no Docker engine to ask).
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

cargo nextest run --all-targets --no-fail-fast "$@"
