#!/usr/bin/env bash
# The Python package against the old redis-py implementation (crates/python/bench): a
# release wheel, installed in scripts/python.sh's virtual environment, and the old
# implementation, on one redis-server of its own on a free loopback port.
#   scripts/python-bench.sh                  # 5 s per measurement
#   scripts/python-bench.sh --seconds 10     # any bench.py flag
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python-env.sh
rm -rf target/wheels-release
(cd crates/python && "$root/$venv/bin/maturin" build --release --quiet --out "$root/target/wheels-release")
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels-release/cache_layer-*.whl
start_redis
echo "redis-server $(redis-server --version | awk '{print $3}'), $(nproc) cores; python $("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
"$venv/bin/python" crates/python/bench/bench.py --redis-port "$port" "$@"
