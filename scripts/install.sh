#!/usr/bin/env bash
# Install what Dockyard needs on a Debian 12 machine, as root: the apt packages
# (runtime, registry, VM stack, Qt's X libraries) and a virtual environment at
# .venv with the project and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # engine: OCI runtime, monitor, networking, images built offline in tests
  crun runc conmon tini iproute2 nftables iptables busybox-static e2fsprogs
  # registries: the real registry peer and a second reader
  docker-registry skopeo apache2-utils
  # reference engine for benchmarks
  docker.io
  # machines: QEMU through libvirt, the guest image builder
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev
  pkg-config mmdebstrap openssh-client cpio zstd
  # desktop app under Xvfb
  xvfb libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-render-util0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-randr0
  libxcb-xinerama0 libegl1 libgl1 libfontconfig1 libdbus-1-3 fonts-dejavu-core
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing apt packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts these on install; Dockyard starts its own registries and engines.
systemctl disable --now docker-registry docker containerd >/dev/null 2>&1 || true
pkill -x docker-registry 2>/dev/null || true

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[desktop,test,installers]"
