#!/usr/bin/env bash
# Install everything Dockyard needs (apt packages, .venv), then run the main
# job: build the guest image (cached), create and start the default machine
# (a QEMU VM through libvirt that runs the engine) and say how to point
# docker at it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
dockyard=.venv/bin/dockyard

echo "== guest image"
.venv/bin/python -m vmimage build
# libvirtd and virtlogd, where no service manager started them.
.venv/bin/python -c 'from desktop.machine.backend_qemu import ensure_libvirtd; ensure_libvirtd()'

echo "== default machine"
if ! "$dockyard" machine status default >/dev/null 2>&1; then
  "$dockyard" machine create default
fi
"$dockyard" machine start default
eval "$("$dockyard" machine env default)"
docker version
echo
echo "Dockyard's default machine is running. Point docker at it with:"
echo "  eval \"\$($PWD/$dockyard machine env)\"     # or: docker context use dockyard"
