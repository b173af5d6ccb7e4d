#!/usr/bin/env bash
# bench.sh - how long treecast takes to put S bytes on N machines, against
# theory and against the obvious alternative (everyone downloads from the
# seed at once over plain TCP: a "star").
#
# For each N (default 8 and 16), on a fresh lab of N+1 hosts (scripts/lab.sh)
# with every link full-duplex at B (default 100mbit):
#   ring   every host sends to the next at once: what the lab itself can carry
#          with every link busy (on 2 cores the CPU may be the limit)
#   2tree  `treecast seed --expect N --report R.json` with N `treecast join --to`,
#          two complementary trees (the default); makespan = the report's "seconds"
#   1tree  the same with one binary tree (`[relay] trees = 1`)
#   star   N receivers fetch the same file from the seed at once over TCP
#          (socat server, socat clients); makespan = start to last byte
# and prints makespan, S/B, makespan/(S/B), the seed's upload / S (its eth0
# tx_bytes) and the busiest receiver's upload / S.
# Theory (FIELD.md): pipelined binary tree ~2 S/B with the seed uploading 2 S;
# two complementary trees S/B + O(log N) chunk times, every node uploading ~S;
# star N S/B with the seed uploading N S.
#
# Env: BENCH_NS ("8 16"), BENCH_TREES ("2 1"), BENCH_RATE (100mbit), BENCH_SIZE_MIB (64),
#      BENCH_CHUNK (seed --chunk-size, default: treecast's), BENCH_STAR=0 (skip
#      the star), BENCH_RING=0 (skip the ring), BENCH_BIN (use this binary),
#      BENCH_KEEP=1 (keep $OUT), OUT (default scripts/out/bench-$LAB_PREFIX).
# Timing goals are printed as ratios; this script fails only if a run breaks.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

NS=${BENCH_NS:-8 16}
RATE=${BENCH_RATE:-100mbit}
SIZE_MIB=${BENCH_SIZE_MIB:-64}
OUT=${OUT:-$ROOT/scripts/out/bench-$LAB_PREFIX}
BIN=$OUT/treecast
PORT=9000
TRUST_ARGS=(--trust-any)
GROUP_ARGS=(--group bench)
CHUNK_ARGS=()
[[ -n ${BENCH_CHUNK:-} ]] && CHUNK_ARGS=(--chunk-size "$BENCH_CHUNK")

cleanup() {
	set +e
	lab_cleanup
	if [[ -z ${BENCH_KEEP:-} && -z ${BENCH_FAILED:-} ]]; then rm -rf "$OUT"; else echo "bench: files kept in $OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
	echo "bench: $*" >&2
	BENCH_FAILED=1
	exit 1
}
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
cpu_sample() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
cpu_busy() { # cpu_busy "BEFORE" "AFTER" -> percent
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); u = y[1]-x[1]; i = y[2]-x[2]; printf "%.0f", (u+i) ? 100*u/(u+i) : 0 }'
}
# tx_all N -> "tx_bytes of h0 .. hN" on one line
tx_all() {
	local i out=()
	for ((i = 0; i <= $1; i++)); do out+=("$(lab_exec "$i" cat /sys/class/net/eth0/statistics/tx_bytes)"); done
	echo "${out[*]}"
}
# upload_stats BEFORE AFTER SIZE -> "seed/S max-receiver/S"
upload_stats() {
	awk -v a="$1" -v b="$2" -v s="$3" 'BEGIN {
		n = split(a, x, " "); split(b, y, " ")
		for (i = 2; i <= n; i++) if (y[i] - x[i] > m) m = y[i] - x[i]
		printf "%.2f %.2f", (y[1] - x[1]) / s, m / s }'
}

mkdir -p "$OUT"
echo "bench: building treecast"
if [[ -n ${BENCH_BIN:-} ]]; then
	cp "$BENCH_BIN" "$BIN"
else
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .) || die "go build failed"
fi
PKG=$OUT/pkg/bench.bin
mkdir -p "$(dirname "$PKG")"
head -c $((SIZE_MIB * 1048576)) /dev/urandom >"$PKG"
S=$(stat -c %s "$PKG")
BITS=$(lab_rate_bits "$RATE")
SB=$(calc %.2f "$S * 8 / $BITS")
echo "bench: S = $SIZE_MIB MiB ($S bytes), B = $RATE per link, full duplex; S/B = ${SB} s; $(nproc) cores"

RESULTS=()
row() { RESULTS+=("$(printf '%-4s %-6s %9s %7s %7s %9s %9s %5s %s' "$@")"); }

for N in $NS; do
	echo
	echo "== N = $N receivers (+1 seed), links $RATE"
	agg=$(((N + 1) * BITS / 1000000))
	((agg > 1500)) && echo "bench: note: the links add up to $agg Mbit/s, past the ~1500 guideline for 2 cores; the ring line shows what the lab carried"
	WORK=$OUT/n$N
	mkdir -p "$WORK"
	first=${#RESULTS[@]}
	lab_up $((N + 1)) "$RATE"
	if [[ ${BENCH_RING:-1} == 1 ]]; then lab_ring_check 3; fi

	# ---- tree: treecast, with two trees (the default) and with one ----
	for TREES in ${BENCH_TREES:-2 1}; do
		method=${TREES}tree
		printf '[relay]\ntrees = %d\n' "$TREES" >"$WORK/trees.toml"
		jpids=()
		for ((i = 1; i <= N; i++)); do
			mkdir -p "$WORK/h$i/home"
			lab_spawn "$i" "$WORK/join-h$i.log" env HOME="$WORK/h$i/home" XDG_CONFIG_HOME="$WORK/h$i/home/.config" \
				timeout -k 10 600 "$BIN" join --name "h$i" --iface eth0 "${GROUP_ARGS[@]}" "${TRUST_ARGS[@]}" \
				--timeout 120s --dir "$WORK/h$i/spool" --to "$WORK/h$i/to"
			jpids+=("$LAB_LAST_PID")
	done
	mkdir -p "$WORK/h0/home"
	tx0=$(tx_all "$N")
	c0=$(cpu_sample)
	t0=$(now)
	rc=0
	lab_exec 0 env HOME="$WORK/h0/home" XDG_CONFIG_HOME="$WORK/h0/home/.config" \
		timeout -k 10 600 "$BIN" seed --expect "$N" --wait 60s --iface eth0 "${GROUP_ARGS[@]}" \
		"${CHUNK_ARGS[@]}" --config "$WORK/trees.toml" --report "$WORK/tree.json" "$PKG" >"$WORK/seed.log" 2>&1 || rc=$?
	t1=$(now)
	c1=$(cpu_sample)
	tx1=$(tx_all "$N")
	for p in "${jpids[@]}"; do wait "$p" || true; done
	echo "seed output (last lines):"
	tail -n $((N + 6)) "$WORK/seed.log" | sed 's/^/    | /'
	if ! jq -e '.nodes' "$WORK/tree.json" >/dev/null 2>&1; then
		BENCH_FAILED=1
		echo "bench: $method run failed: seed exit code $rc, no report (logs in $WORK)"
		row "$N" "$method" "failed" "$SB" "-" "-" "-" "-" "seed exit $rc"
	else
		mk=$(jq -r '.seconds' "$WORK/tree.json")
		okn=$(jq '[.nodes[] | select(.status == "ok")] | length' "$WORK/tree.json")
		same=0
		for ((i = 1; i <= N; i++)); do cmp -s "$PKG" "$WORK/h$i/to/bench.bin" && same=$((same + 1)); done
		read -r up_seed up_max <<<"$(upload_stats "$tx0" "$tx1" "$S")"
		spread=$(jq -r '[.nodes[].seconds] | "\(min | . * 10 | round / 10)-\(max | . * 10 | round / 10)"' "$WORK/tree.json")
		note="ok $okn/$N, identical $same/$N; nodes done in ${spread} s; seed ran $(calc %.1f "$t1 - $t0") s with discovery"
		((rc == 0)) || note="SEED EXIT $rc; $note"
		row "$N" "$method" "$(calc %.2f "$mk")" "$SB" "$(calc %.2f "$mk / $SB")" "$up_seed" "$up_max" "$(cpu_busy "$c0" "$c1")%" "$note"
		if ((rc != 0 || same != N)); then
			BENCH_FAILED=1
			echo "bench: $method run: seed exit code $rc, $same/$N copies identical; failed nodes:"
			jq -r '.nodes[] | select(.status != "ok") | "    \(.name): \(.error)"' "$WORK/tree.json"
		fi
	fi
	rm -rf "${WORK:?}"/h*/to "${WORK:?}"/h*/spool
	done

	# ---- star: everyone fetches from the seed at once over plain TCP ----
	if [[ ${BENCH_STAR:-1} == 1 ]]; then
		lab_spawn 0 "$WORK/star-server.log" timeout -k 5 900 socat "TCP4-LISTEN:$PORT,fork,reuseaddr,backlog=256" "OPEN:$PKG,rdonly"
		spid=$LAB_LAST_PID
		for _ in $(seq 1 100); do lab_exec 0 ss -ltn | grep -q ":$PORT " && break; sleep 0.05; done
		mkdir -p "$WORK/star"
		tx0=$(tx_all "$N")
		c0=$(cpu_sample)
		t0=$(now)
		cpids=()
		for ((i = 1; i <= N; i++)); do
			lab_spawn "$i" "$WORK/star-h$i.log" timeout -k 5 900 socat -u "TCP4:$(lab_addr 0):$PORT" "CREATE:$WORK/star/h$i"
			cpids+=("$LAB_LAST_PID")
		done
		bad=0
		for p in "${cpids[@]}"; do wait "$p" || bad=$((bad + 1)); done
		t1=$(now)
		c1=$(cpu_sample)
		tx1=$(tx_all "$N")
		kill -TERM "$spid" 2>/dev/null || true
		wait "$spid" 2>/dev/null || true
		same=0
		for ((i = 1; i <= N; i++)); do cmp -s "$PKG" "$WORK/star/h$i" && same=$((same + 1)); done
		mk=$(calc %.2f "$t1 - $t0")
		read -r up_seed up_max <<<"$(upload_stats "$tx0" "$tx1" "$S")"
		row "$N" star "$mk" "$SB" "$(calc %.2f "$mk / $SB")" "$up_seed" "$up_max" "$(cpu_busy "$c0" "$c1")%" \
			"identical $same/$N; theory N x S/B = $(calc %.2f "$N * $SB") s"
		rm -rf "$WORK/star"
	fi
	lab_kill_pids
	lab_down
	printf '%s\n' "${RESULTS[@]:first}"
done

echo
echo "== results: S = $SIZE_MIB MiB, B = $RATE, S/B = $SB s"
printf '%-4s %-6s %9s %7s %7s %9s %9s %5s %s\n' N method makespan S/B ratio seed-up/S max-up/S cpu notes
printf '%s\n' "${RESULTS[@]}"
echo
echo "goal: a tree should be within 2.2x S/B (one tree: theory 2x, seed upload 2x S; two trees: theory ~1x, seed upload 1x S)"
echo "      (star: makespan about N x S/B, seed upload N x S; ratio = makespan / (S/B))"
echo "      upload/S is eth0 tx_bytes / S (a veth counts 64 KiB GSO packets, so headers add <1%)"
echo "      cpu = the whole machine's, anything else running included; near 100% means the lab, not the links, was the limit"
[[ -z ${BENCH_FAILED:-} ]]
