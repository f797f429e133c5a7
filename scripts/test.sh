#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing (redis-server, and
# promtool from Debian's prometheus package, through apt; cargo-nextest from crates.io),
# then runs the whole suite. Tests start their own
# redis-server processes on free loopback ports; nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

cargo nextest run --all-targets --no-fail-fast "$@"
