#!/usr/bin/env bash
# The main job, on a fresh machine: installs redis-server when it is missing (the demo
# uses the configured Redis when one answers, and otherwise starts its own), builds the
# release binary and runs `cache-layer demo`: an in-process Kafka, a live synthetic
# Bluesky-trend stream and the real daemon. Ctrl-C stops it; extra arguments go to the
# demo (for example --duration 30).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
# A C toolchain and make build the bundled librdkafka.
{ command -v cc && command -v make; } >/dev/null || missing+=(build-essential)
command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
exec cargo run --release --quiet -- --config config/cache-layer.toml demo "$@"
