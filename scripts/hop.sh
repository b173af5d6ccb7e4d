#!/usr/bin/env bash
# hop.sh - what one unshaped hop costs, against a plain relay: a package
# moved seed -> node -> node over loopback, where the CPU and not a link is
# the limit, by
#   treecast  in-process (go test -bench RelayLoopback ./relay): a seed and
#             two receivers, each relaying half of the package to the other
#             (two trees), so the same bytes cross as in a chain of two hops;
#             every block verified and stored, as in a session
#   chain     socat -> socat | tee FILE | socat -> socat FILE on 127.0.0.1
# and prints each one's throughput (package bytes per second of wall time).
# Work files on tmpfs (/dev/shm) when there is one. Traffic stays on loopback.
# In a VM, the first run after boot pays for touching fresh memory: run it
# twice and read the second.
#
# Env: HOP_MIB (package size, default 2048).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=${HOP_MIB:-2048}
[[ $MIB =~ ^[0-9]+$ ]] && ((MIB > 0)) || { echo "hop: HOP_MIB must be a positive number of MiB" >&2; exit 2; }
export PATH=/usr/local/go/bin:$PATH
command -v socat >/dev/null || { echo "hop: needs socat (scripts/setup.sh installs it)" >&2; exit 2; }
BASE=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && BASE=/dev/shm
W=$(mktemp -d "$BASE/hop.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT

echo "hop: $MIB MiB, seed -> node -> node on loopback, files in $BASE"
(cd "$ROOT" && go test -c -o "$W/relay.test" ./relay)
line=$(cd "$W" && TMPDIR=$W TREECAST_BENCH_MIB=$MIB timeout 600 ./relay.test -test.run XXX \
	-test.bench RelayLoopback -test.benchtime 1x | grep -E '^BenchmarkRelayLoopback')
tc=$(awk '{ for (i = 1; i < NF; i++) if ($(i+1) == "MB/s") print $i }' <<<"$line")
echo "treecast: $tc MB/s"

head -c $((MIB << 20)) /dev/urandom >"$W/pkg"
# listening ports no earlier run can still hold
P1=$((20000 + RANDOM % 20000))
P2=$((P1 + 1))
listening() {
	local i
	for i in $(seq 1 100); do
		ss -ltn "sport = :$1" | grep -q LISTEN && return 0
		sleep 0.05
	done
	echo "hop: nothing listens on 127.0.0.1:$1" >&2
	exit 1
}
socat -u "TCP4-LISTEN:$P2,bind=127.0.0.1,reuseaddr" "OPEN:$W/out2,creat,trunc" &
sink=$!
listening "$P2"
bash -c "socat -u TCP4-LISTEN:$P1,bind=127.0.0.1,reuseaddr STDOUT | tee '$W/out1' | socat -u STDIN TCP4:127.0.0.1:$P2" &
mid=$!
listening "$P1"
t0=$(date +%s.%N)
timeout 600 socat -u "OPEN:$W/pkg,rdonly" "TCP4:127.0.0.1:$P1"
wait "$mid" "$sink"
t1=$(date +%s.%N)
cmp -s "$W/pkg" "$W/out2" && cmp -s "$W/pkg" "$W/out1" || { echo "hop: the chain's copies differ" >&2; exit 1; }
chain=$(awk -v a="$t0" -v b="$t1" -v s=$((MIB << 20)) 'BEGIN { printf "%.1f", s / (b - a) / 1e6 }')
echo "chain:    $chain MB/s"
awk -v t="$tc" -v c="$chain" 'BEGIN { printf "treecast / chain: %.2f\n", t / c }'
