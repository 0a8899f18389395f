#!/usr/bin/env bash
# Install what kubewire needs on a fresh Debian/Ubuntu machine: apt packages (only the
# missing ones) and a virtual environment in .venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iproute2 nftables iptables conntrack iputils-ping curl util-linux procps
              containernetworking-plugins tcpdump dnsutils dnsperf unbound golang-go
              bird2 frr gobgpd)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing ${missing[*]}"
  # Packages like unbound, bird2 and frr start their daemons on install where an init
  # system runs; kubewire starts them itself inside lab namespaces only, never in the
  # machine's own, so service starts are refused while installing (policy-rc.d, 101).
  guard=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
    trap '$SUDO rm -f "$guard"' EXIT  # also when the install fails
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: kubewire needs Python >= 3.11 (found $("$PY" --version 2>&1))" >&2
  exit 2
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  if ! "$PY" -m venv .venv 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv && "$PY" -m venv .venv
  fi
fi
if [[ ! -f .venv/.installed ]] || [[ pyproject.toml -nt .venv/.installed ]]; then
  echo "setup: installing kubewire and its dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch .venv/.installed
fi
