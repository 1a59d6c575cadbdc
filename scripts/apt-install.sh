#!/usr/bin/env bash
# Install Debian packages by name (as root, or through sudo): `scripts/apt-install.sh PACKAGE...`.
set -euo pipefail
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
