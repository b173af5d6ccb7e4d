#!/usr/bin/env bash
# demo.sh - see treecast work in about a minute, on an emulated LAN in this
# machine (network namespaces; needs root). Nothing touches your real network.
#
#   sudo scripts/demo.sh
#
# It builds treecast, brings up 7 "machines" (h0..h6) on one switch with
# 100 Mbit/s links, starts `treecast join` on h1..h6, sends a 32 MiB file from
# h0 with `treecast seed`, checks every copy with sha256sum, and cleans up.
# Env: DEMO_RATE (100mbit), DEMO_SIZE_MIB (32), DEMO_RECEIVERS (6).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

RATE=${DEMO_RATE:-100mbit}
SIZE_MIB=${DEMO_SIZE_MIB:-32}
R=${DEMO_RECEIVERS:-6}
OUT=${OUT:-$ROOT/scripts/out/demo-$LAB_PREFIX}
BIN=$OUT/treecast

bye() {
	local rc=$?
	set +e
	echo
	echo "Cleaning up: stopping the receivers and removing the emulated LAN."
	lab_cleanup 2>/dev/null
	rm -rf "$OUT"
	if ((rc != 0)); then echo "The demo stopped early (exit code $rc)."; fi
}
trap bye EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m%s\033[0m\n' "$*"; }
[[ -t 1 ]] || step() { printf '\n%s\n' "$*"; }

[[ $EUID -eq 0 ]] || { echo "The demo builds network namespaces, so it needs root: sudo $0"; exit 1; }
export PATH=/usr/local/go/bin:$PATH
bash "$ROOT/scripts/setup.sh"
for tool in go ip tc; do
	command -v "$tool" >/dev/null || { echo "The demo needs '$tool' (apt-get install iproute2; Go from go.dev)."; exit 1; }
done

echo "treecast demo: 1 seed + $R receivers on an emulated LAN, $RATE links."

step "1. Build treecast"
mkdir -p "$OUT"
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .)
echo "   built $BIN ($("$BIN" version 2>/dev/null | head -n 1))"

step "2. Bring up the LAN: h0..h$R on one switch"
lab_up $((R + 1)) "$RATE" 2>/dev/null
for ((i = 0; i <= R; i++)); do
	role="receiver"
	((i == 0)) && role="seed"
	printf '   h%-2s %-12s %s\n' "$i" "$(lab_addr "$i")" "$role"
done
echo "   (each host is a network namespace; links are shaped to $RATE both ways)"

step "3. Make a seed key; receivers will trust only it"
mkdir -p "$OUT/seed"
"$BIN" keygen --out "$OUT/seed/seed.key" | sed 's/^/   /'
FP=$(awk '{print $3}' "$OUT/seed/seed.key.pub")
TRUST_ARGS=(--trust "$FP")

step "4. Start a receiver on h1..h$R"
echo "   each runs: treecast join --trust $FP --to DIR --timeout 2m"
for ((i = 1; i <= R; i++)); do
	mkdir -p "$OUT/h$i"
	lab_spawn "$i" "$OUT/h$i/join.log" env HOME="$OUT/h$i" timeout -k 5 300 "$BIN" join \
		--iface eth0 "${TRUST_ARGS[@]}" --dir "$OUT/h$i/state" --to "$OUT/h$i/received" --timeout 2m
done
echo "   $R receivers are announcing themselves over mDNS."

step "5. Send a $SIZE_MIB MiB file from h0"
PKG=$OUT/seed/demo-$SIZE_MIB.bin
head -c $((SIZE_MIB * 1048576)) /dev/urandom >"$PKG"
echo "   h0# treecast seed --expect $R --key seed.key --report report.json $(basename "$PKG")"
echo
rc=0
lab_exec 0 env HOME="$OUT/seed" timeout -k 5 300 "$BIN" seed --expect "$R" --wait 30s --iface eth0 \
	--key "$OUT/seed/seed.key" --report "$OUT/seed/report.json" "$PKG" || rc=$?
echo
echo "   seed exit code: $rc (0 = every receiver applied the package)"
for p in "${LAB_PIDS[@]}"; do wait "$p" || true; done

step "6. Check every copy with sha256sum"
want=$(sha256sum "$PKG" | awk '{print $1}')
echo "   original    $want"
good=0
for ((i = 1; i <= R; i++)); do
	f=$OUT/h$i/received/$(basename "$PKG")
	if [[ -f $f ]]; then
		got=$(sha256sum "$f" | awk '{print $1}')
	else
		got="(missing)"
	fi
	if [[ $got == "$want" ]]; then
		good=$((good + 1))
		printf '   h%-9s %s  identical\n' "$i" "$got"
	else
		printf '   h%-9s %s  DIFFERENT\n' "$i" "$got"
	fi
done
if [[ -f $OUT/seed/report.json ]] && command -v jq >/dev/null; then
	secs=$(jq -r '.seconds' "$OUT/seed/report.json")
	sb=$(awk -v s="$(stat -c %s "$PKG")" -v b="$(lab_rate_bits "$RATE")" 'BEGIN{printf "%.1f", s*8/b}')
	echo
	echo "   The whole fleet had the file after $(printf '%.1f' "$secs") s; one copy over one $RATE link alone takes $sb s."
fi

echo
if ((good == R)) && ((rc == 0)); then
	echo "Done: $good of $R copies identical."
	echo "Next: scripts/e2e.sh (the full test), scripts/bench.sh (against udpcast and a TCP chain),"
	echo "      scripts/lab.sh (your own lab: LAB_PREFIX=me scripts/lab.sh up 4; ... exec 1 bash)."
else
	echo "Only $good of $R copies are identical (seed exit code $rc): see the seed's table above."
	exit 1
fi
