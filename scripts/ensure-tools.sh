#!/usr/bin/env bash
# Make sure the system tools the tests drive are installed, from Debian's packages when missing:
# chromium and its chromedriver (the playground's browser tests) and docker-compose (`config` checks
# of docker-compose.yml; no container engine is needed for that).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for pair in chromium:chromium chromedriver:chromium-driver docker-compose:docker-compose; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] || scripts/apt-install.sh "${missing[@]}"
