# Sourced by scripts/python.sh and scripts/python-bench.sh, from the repository's root:
# the virtual environment with the tools of crates/python/requirements-dev.txt
# ($venv, made when missing), and `start_redis`, a redis-server of the caller's own on a
# free loopback port ($port), stopped when the caller exits.
root="$PWD"
venv="${CARGO_TARGET_DIR:-target}/python-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r crates/python/requirements-dev.txt

start_redis() {
  redis_dir="$(mktemp -d)"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$redis_dir"' EXIT
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" --daemonize yes >/dev/null
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
}
