#!/usr/bin/env bash
# Install everything Dockyard needs (apt packages, .venv), then run the main
# job: start the engine on this Linux host and say how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
sock=/run/dockyard/docker.sock
mkdir -p /run/dockyard /var/log/dockyard
if ! DOCKER_HOST=unix://$sock docker version >/dev/null 2>&1; then
  setsid .venv/bin/dockyard-engine --host "unix://$sock" >/var/log/dockyard/engine.log 2>&1 &
  for _ in $(seq 100); do
    DOCKER_HOST=unix://$sock docker version >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
DOCKER_HOST=unix://$sock docker version
echo
echo "Dockyard's engine is running. Point docker at it with:"
echo "  export DOCKER_HOST=unix://$sock"
