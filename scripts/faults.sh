#!/usr/bin/env bash
# faults.sh - one fault at a time on the LAN lab: 1 seed (h0) + 16 receivers
# (h1..h16) on shaped links. First a run without a fault gives the baseline
# makespan T0; then, each in a fresh session:
#   kill     kill -9 an interior relay (h1, or FAULTS_VICTIM) at about T0/3
#   stop     SIGSTOP h1 at about T0/3 (it hangs: alive, silent)
#   linkdown take h1's link down at about T0/3
#   slow     h1's link at a tenth of the rate from the start
#   late     h15 and h16 start at about T0/3; the seed expects all 16
#   mute     h1 answers mDNS but drops every connection attempt (a host
#            behind a firewall, or gone since it answered): the seed waits
#            out its dial timeout for it, and no other node does
#   seed     kill -9 the seed at about T0/3 and start it again
#   rejoin   kill -9 h1 at about T0/3 and start its join again on the same
#            --dir: it rejoins the session and resumes from its spool (the
#            makespan is the other nodes'; h1's own end is printed)
# Processes run unwrapped (no timeout(1)), so signals reach treecast itself.
# Each asserts that every other node ends ok with byte-identical bytes, that
# the faulty node is reported, and prints the makespan of the healthy nodes
# against T0 (goal: at most 1.5x).
#
# Prints PASS/FAIL per check and ends with "N passed, N failed".
# Env: FAULTS_RATE (default 100mbit), FAULTS_SIZE_MB (default 64),
#      FAULTS_ONLY (space-separated subset of the faults above),
#      FAULTS_BIN (use this binary instead of building one),
#      FAULTS_VICTIM (the host that fails, default 1: a root of the first
#      tree; 10 is a relay inside it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

RATE=${FAULTS_RATE:-100mbit}
SIZE_MB=${FAULTS_SIZE_MB:-64}
ONLY=${FAULTS_ONLY:-kill stop linkdown slow late mute seed rejoin}
OUT=${OUT:-$ROOT/scripts/out/faults-$LAB_PREFIX}
BIN=$OUT/treecast
N=16
VICTIM=${FAULTS_VICTIM:-1}
TRUST_ARGS=(--trust-any)

PASSED=0
FAILED=0
pass() { printf 'PASS: %s\n' "$*"; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; FAILED=$((FAILED + 1)); }

# show LOG: the end of a process's log, under a failed check.
show() { [[ -f $1 ]] && tail -n 15 "$1" | sed "s|^|    ${1##*/}: |"; }

# crashes RUN: no process of the run died of a Go panic or fatal error.
crashes() {
	local run=$1 hit
	hit=$(grep -l -E '^(panic:|fatal error:)|DATA RACE' "$OUT/$run"/*.log 2>/dev/null || true)
	if [[ -z $hit ]]; then
		pass "$run: no process crashed"
		return
	fi
	for log in $hit; do
		fail "$run: ${log##*/} crashed"
		grep -m1 -A 12 -E '^(panic:|fatal error:)|DATA RACE' "$log" | sed 's/^/    /'
	done
}

finish() {
	local rc=$?
	lab_cleanup
	printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
	((FAILED == 0 && rc == 0)) || exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
if [[ -n ${FAULTS_BIN:-} ]]; then cp "$FAULTS_BIN" "$BIN"; else (cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .); fi
"$BIN" keygen --out "$OUT/seed.key" >/dev/null
PKG=$OUT/pkg.bin
head -c $((SIZE_MB << 20)) /dev/urandom >"$PKG"
WANT=$(sha256sum "$PKG" | cut -d' ' -f1)
lab_up $((N + 1)) "$RATE"

# start_receiver I RUN: a join on host I for run RUN; its pid in RPID[I].
declare -A RPID
start_receiver() {
	local i=$1 run=$2
	mkdir -p "$OUT/$run/h$i"
	lab_spawn "$i" "$OUT/$run/h$i.log" "$BIN" join --name "h$i" --iface eth0 \
		"${TRUST_ARGS[@]}" --dir "$OUT/$run/h$i/state" --to "$OUT/$run/h$i/out" --timeout 60s
	RPID[$i]=$LAB_LAST_PID
}

# seed RUN [ARGS...]: run the seed on h0 in the background; pid in SEED_PID.
seed() {
	local run=$1
	shift
	lab_spawn 0 "$OUT/$run/seed.log" "$BIN" --verbose seed --iface eth0 --key "$OUT/seed.key" \
		--report "$OUT/$run/report.json" "$@" "$PKG"
	SEED_PID=$LAB_LAST_PID
}

# verify RUN FAULTY: checks the report and the bytes; prints the makespan.
verify() {
	local run=$1 faulty=$2 rep=$OUT/$1/report.json i got ok=1
	crashes "$run"
	if [[ ! -s $rep ]]; then
		fail "$run: no report"
		show "$OUT/$run/seed.log"
		return
	fi
	for ((i = 1; i <= N; i++)); do
		[[ " $faulty " == *" $i "* ]] && continue
		got=$(sha256sum "$OUT/$run/h$i/out/pkg.bin" 2>/dev/null | cut -d' ' -f1 || true)
		if [[ $got != "$WANT" ]]; then
			fail "$run: h$i has no byte-identical copy"
			ok=0
		fi
		if [[ $(jq -r --arg n "h$i" '.nodes[] | select(.name == $n) | .status' "$rep") != ok ]]; then
			fail "$run: h$i not ok in the report: $(jq -c --arg n "h$i" '.nodes[] | select(.name == $n)' "$rep")"
			show "$OUT/$run/h$i.log"
			ok=0
		fi
	done
	((ok)) && pass "$run: every healthy node ok and byte-identical"
	makespan "$run" "$faulty"
}

# makespan RUN FAULTY: when the last node of RUN not in FAULTY ended.
makespan() {
	MAKESPAN=$(jq --arg f " $2 " '[.nodes[] | select(. as $n | $f | contains(" " + ($n.name | ltrimstr("h")) + " ") | not) | .seconds] | max' "$OUT/$1/report.json")
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

report_makespan() {
	local run=$1
	printf '%-9s healthy nodes done in %6.2fs = %sx the fault-free %.2fs (goal <= 1.5x)\n' \
		"$run" "$MAKESPAN" "$(ratio "$MAKESPAN" "$T0")" "$T0"
}

# run_session RUN: receivers on h1..h16, seed expecting them all.
run_plain() {
	local run=$1 i
	for ((i = 1; i <= N; i++)); do start_receiver "$i" "$run"; done
	seed "$run" --expect "$N" --wait 20s
}

# wait_all: waits for the seed and every receiver of this run.
wait_seed() { wait "$SEED_PID" && SEED_RC=0 || SEED_RC=$?; }

# seed_exit RUN WANT WHAT: the seed of RUN exited WANT; else its log's end.
seed_exit() {
	if [[ $SEED_RC == "$2" ]]; then
		pass "$1: $3"
		return
	fi
	fail "$1: seed exit $SEED_RC, want $2 ($3)"
	show "$OUT/$1/seed.log"
}
wait_receivers() {
	local i
	for ((i = 1; i <= N; i++)); do
		[[ -n ${RPID[$i]:-} ]] && { wait "${RPID[$i]}" 2>/dev/null || true; }
	done
	RPID=()
}

node_field() { jq -r --arg n "h$3" ".nodes[] | select(.name == \$n) | .$2" "$OUT/$1/report.json"; }

# victim_failed RUN: stops the victim, waits for every receiver, and checks
# that the seed exited 1, the healthy nodes' copies and the victim's report
# as failed; prints the makespan.
victim_failed() {
	local run=$1 st err
	kill -TERM "${RPID[$VICTIM]}" 2>/dev/null || true
	wait_receivers
	seed_exit "$run" 1 "seed exit 1 (a node failed)"
	verify "$run" "$VICTIM"
	st=$(node_field "$run" status "$VICTIM")
	err=$(node_field "$run" error "$VICTIM")
	[[ $st == failed && -n $err ]] && pass "$run: h$VICTIM reported failed: $err" || fail "$run: h$VICTIM reported '$st' '$err'"
	report_makespan "$run"
}

# --- baseline ---------------------------------------------------------------
mkdir -p "$OUT/base"
run_plain base
wait_seed
wait_receivers
seed_exit base 0 "seed exit 0"
verify base ""
T0=$MAKESPAN
printf 'baseline: %d receivers, %d MiB at %s: %.2fs\n' "$N" "$SIZE_MB" "$RATE" "$T0"
THIRD=$(awk -v t="$T0" 'BEGIN { printf "%.1f", t / 3 }')

for fault in $ONLY; do
	run=$fault
	mkdir -p "$OUT/$run"
	case $fault in
	kill | stop | linkdown)
		run_plain "$run"
		sleep "$THIRD"
		case $fault in
		kill) kill -KILL "${RPID[$VICTIM]}" ;;
		stop) kill -STOP "${RPID[$VICTIM]}" ;;
		linkdown) ip -n "$(lab_ns "$VICTIM")" link set eth0 down ;;
		esac
		wait_seed
		case $fault in
		stop) kill -CONT "${RPID[$VICTIM]}" ;;
		linkdown) ip -n "$(lab_ns "$VICTIM")" link set eth0 up ;;
		esac
		victim_failed "$run"
		;;
	slow)
		tc -n "$(lab_ns "$VICTIM")" qdisc change dev eth0 root tbf rate 10mbit burst 16k latency 20ms
		tc -n "$(lab_sw_ns)" qdisc change dev "p$VICTIM" root tbf rate 10mbit burst 16k latency 20ms
		run_plain "$run"
		wait_seed
		wait_receivers
		tc -n "$(lab_ns "$VICTIM")" qdisc change dev eth0 root tbf rate "$RATE" burst "$(lab_burst "$RATE")" latency "$LAB_LATENCY"
		tc -n "$(lab_sw_ns)" qdisc change dev "p$VICTIM" root tbf rate "$RATE" burst "$(lab_burst "$RATE")" latency "$LAB_LATENCY"
		seed_exit "$run" 0 "seed exit 0 (the slow node finishes too)"
		verify "$run" "$VICTIM"
		grep -q "slow relay" "$OUT/$run/seed.log" && pass "$run: the slow relay's children were moved" ||
			fail "$run: the seed did not move the slow relay's children"
		printf '%-9s slow node h%d done in %.2fs\n' "$run" "$VICTIM" "$(node_field "$run" seconds "$VICTIM")"
		report_makespan "$run"
		;;
	late)
		for ((i = 1; i <= N - 2; i++)); do start_receiver "$i" "$run"; done
		seed "$run" --expect "$N" --wait 3s
		sleep "$(awk -v t="$THIRD" 'BEGIN { print t + 3 }')"
		start_receiver $((N - 1)) "$run"
		start_receiver "$N" "$run"
		wait_seed
		wait_receivers
		seed_exit "$run" 0 "seed exit 0 with the 2 late receivers counted"
		verify "$run" ""
		n=$(jq '.nodes | length' "$OUT/$run/report.json")
		[[ $n == "$N" ]] && pass "$run: report lists all $N nodes" || fail "$run: report lists $n nodes"
		MAKESPAN=$(awk -v m="$MAKESPAN" 'BEGIN { print m - 3 }') # the seed waited 3s for the missing two
		report_makespan "$run"
		;;
	mute)
		ns=$(lab_ns "$VICTIM")
		ip netns exec "$ns" nft add table inet mute
		ip netns exec "$ns" nft 'add chain inet mute in { type filter hook input priority 0 ; }'
		ip netns exec "$ns" nft add rule inet mute in 'tcp flags & (syn | ack) == syn drop'
		run_plain "$run"
		wait_seed
		ip netns exec "$ns" nft delete table inet mute
		victim_failed "$run"
		;;
	seed)
		run_plain "$run"
		sleep "$THIRD"
		kill -KILL "$SEED_PID"
		wait "$SEED_PID" 2>/dev/null || true
		seed "$run" --expect "$N" --wait 20s
		wait_seed
		wait_receivers
		seed_exit "$run" 0 "the restarted seed exits 0"
		verify "$run" ""
		resumed=$(jq --argjson s $((SIZE_MB << 20)) '[.nodes[] | select(.received < $s)] | length' "$OUT/$run/report.json")
		((resumed == N)) && pass "$run: every node resumed from its spool (downloaded less than the package)" ||
			fail "$run: only $resumed of $N nodes resumed"
		MAKESPAN=$(awk -v m="$MAKESPAN" -v t="$THIRD" 'BEGIN { print m + t }')
		report_makespan "$run"
		;;
	rejoin)
		run_plain "$run"
		sleep "$THIRD"
		kill -KILL "${RPID[$VICTIM]}"
		wait "${RPID[$VICTIM]}" 2>/dev/null || true
		start_receiver "$VICTIM" "$run"
		wait_seed
		wait_receivers
		seed_exit "$run" 0 "seed exit 0 (h$VICTIM came back and finished)"
		verify "$run" ""
		got=$(node_field "$run" received "$VICTIM")
		((got < SIZE_MB << 20)) && pass "$run: h$VICTIM resumed: downloaded $got of $((SIZE_MB << 20)) bytes after rejoining" ||
			fail "$run: h$VICTIM downloaded $got bytes after rejoining, no resume"
		printf '%-9s rejoined node h%d done in %.2fs\n' "$run" "$VICTIM" "$(node_field "$run" seconds "$VICTIM")"
		makespan "$run" "$VICTIM"
		report_makespan "$run"
		;;
	*)
		fail "unknown fault $fault"
		;;
	esac
done
