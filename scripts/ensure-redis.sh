#!/usr/bin/env bash
# Make sure a Redis server answers on 127.0.0.1:${REDIS_PORT:-6379}; install and start one if not.
set -euo pipefail
port=${REDIS_PORT:-6379}
answers() { redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; }
command -v redis-cli >/dev/null 2>&1 && answers && exit 0
command -v redis-server >/dev/null 2>&1 || "$(dirname "$0")/apt-install.sh" redis-server
redis-server --daemonize yes --port "$port" --save "" --appendonly no >/dev/null
for _ in $(seq 50); do answers && exit 0; sleep 0.1; done
echo "redis-server did not answer on port $port" >&2
exit 1
