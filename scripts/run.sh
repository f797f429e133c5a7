#!/usr/bin/env bash
# The main job: builds the release binary and runs it against the shipped configuration
# (config/cache-layer.toml, overridable from the environment; see docs/configuration.md).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet --bin cache-layer -- --config config/cache-layer.toml "$@"
