#!/usr/bin/env bash
# setup.sh - installs what the LAN lab, the tests and the demo need on a
# Debian machine (as root), and fetches the Go modules. Quick when all is
# there already; demo.sh, test.sh and .ci/run call it first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH=/usr/local/go/bin:$PATH
export DEBIAN_FRONTEND=noninteractive

# iproute2: ip/tc for the lab; iputils-ping, netcat-openbsd, socat: lab
# checks, rate measurements and the bench baseline; jq: reports; gcc +
# libc6-dev: go test -race (cgo); util-linux: unshare (a hostname per host);
# procps, diffutils, tar, gzip: assertions and archive packages; nftables:
# faults.sh's host that drops every connection attempt; systemd:
# systemd-analyze verify on the unit scripts/install.sh writes (nothing is
# started: it only reads unit files).
PKGS=(iproute2 iputils-ping netcat-openbsd socat jq gcc libc6-dev util-linux procps diffutils tar gzip ca-certificates nftables systemd)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	[[ $EUID -eq 0 ]] || { echo "setup: missing ${missing[*]}: run as root to install them" >&2; exit 1; }
	echo "setup: installing ${missing[*]}"
	for try in 1 2 3; do
		if timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
			break
		fi
		((try < 3)) || { echo "setup: apt-get failed 3 times" >&2; exit 1; }
		echo "setup: apt-get failed (try $try), retrying in 10s" >&2
		sleep 10
	done
fi
command -v go >/dev/null || { echo "setup: Go is not installed (expected at /usr/local/go)" >&2; exit 1; }
for try in 1 2 3; do
	timeout 600 go mod download && break
	((try < 3)) || { echo "setup: go mod download failed 3 times" >&2; exit 1; }
	sleep 10
done
