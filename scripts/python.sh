#!/usr/bin/env bash
# The Python package (crates/python): builds its wheel with maturin into target/wheels,
# checks it (ruff, mypy --strict) and runs its tests (pytest, against redis-server
# processes they start, and beside the daemon on Apache Kafka: the broker of
# CACHE_LAYER_TEST_KAFKA when scripts/test.sh shares one). Then it installs the wheel
# alone in a fresh virtual environment and runs the package README's example there.
# Run by scripts/test.sh; the daemon's debug binaries must be built.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python-env.sh
rm -rf target/wheels
(cd crates/python && "$root/$venv/bin/maturin" build --quiet --out "$root/target/wheels")
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/cache_layer-*.whl

cd crates/python
"$root/$venv/bin/ruff" check python tests examples bench
"$root/$venv/bin/ruff" format --check python tests examples bench
"$root/$venv/bin/mypy" --strict python tests examples bench
"$root/$venv/bin/python" -m pytest -q
cd "$root"

# The wheel alone, in a fresh environment, as a service installs it.
start_redis
fresh="$(mktemp -d)"
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$fresh" "$redis_dir"' EXIT
python3 -m venv "$fresh/venv"
# As docs/python.md shows it, with the fresh environment's pip.
PATH="$fresh/venv/bin:$PATH" pip install target/wheels/cache_layer-*.whl
out="$(cd "$fresh" && REDIS_HOST=127.0.0.1 REDIS_PORT="$port" venv/bin/python "$root/crates/python/examples/quickstart.py")"
echo "$out"
[ "$out" = "1. Python: 150" ] || { echo "the example printed the wrong ranking" >&2; exit 1; }

# The benchmark against the old redis-py implementation, briefly, so that it keeps
# working (scripts/python-bench.sh measures, with a release wheel).
"$venv/bin/python" crates/python/bench/bench.py --redis-port "$port" --seconds 0.1
