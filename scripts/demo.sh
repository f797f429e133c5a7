#!/usr/bin/env bash
# The main job, on a fresh machine: installs redis-server when it is missing (the demo
# uses the configured Redis when one answers, and otherwise starts its own), builds the
# release binary and runs `cache-layer-dev demo`: an in-process Kafka, a live synthetic
# Bluesky-trend stream and the real daemon. Ctrl-C stops it; extra arguments go to the
# demo (for example --duration 30).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-install.sh

need_build_tools
need redis-server redis-server
install_needed
exec cargo run --release --quiet --package cache-layer-testkit --bin cache-layer-dev -- \
  --config config/cache-layer.toml demo "$@"
