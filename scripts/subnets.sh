#!/usr/bin/env bash
# subnets.sh - a fleet over two subnets: the seed's mDNS reaches only its
# own, and the receivers on the other are given by address.
#
# The lab (lab_up_routed): h0 (seed), h1 and h2 (`join`, announced over
# mDNS) on 10.77.0.0/24; h3..h6 on 10.78.0.0/24, behind a router namespace
# that forwards unicast and no multicast. h3 and h6 are `serve` agents, h4
# and h5 `join`; all four listen on :7171. h3 and h4 are given to the seed
# with --peer (twice), h5 and h6 with --peers FILE.
#
# Checks: the router forwards unicast; `treecast peers` on subnet A lists h1
# and h2 and none of subnet B (mDNS does not pass), and on subnet B lists
# h3..h6 (they do announce); then the seed exits 0, every receiver's copy
# is byte-identical to the package, every join exits 0, and the report
# lists all six receivers ok, each at its own subnet's address.
# Prints PASS/FAIL per check and ends with "N passed, N failed".
# Env: SUBNETS_BIN (use this binary), SUBNETS_KEEP=1 (keep OUT), OUT (work dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

OUT=${OUT:-$ROOT/scripts/out/subnets-$LAB_PREFIX}
BIN=$OUT/treecast
NA=3         # h0 seed, h1 h2 join
NB=4         # h3 serve, h4 h5 join, h6 serve
PORT=7171
A_RECV=(1 2)
B_RECV=(3 4 5 6)
PASSED=0
FAILED=0
pass() { printf 'PASS: %s\n' "$*"; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; FAILED=$((FAILED + 1)); }
check_eq() { if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1 (got '$2', want '$3')"; fi; }

finish() {
	set +e
	lab_cleanup
	((FAILED == 0)) && [[ -z ${SUBNETS_KEEP:-} ]] && rm -rf "$OUT"
	((FAILED == 0)) || echo "logs and files kept in $OUT"
	echo "$PASSED passed, $FAILED failed"
	((FAILED == 0)) || exit 1
}
trap finish EXIT
trap 'fail "interrupted"; exit 130' INT TERM

rm -rf "$OUT"
mkdir -p "$OUT/pkg"
if [[ -n ${SUBNETS_BIN:-} ]]; then
	cp "$SUBNETS_BIN" "$BIN"
else
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .) || { fail "go build"; exit 1; }
fi
PKG=$OUT/pkg/app-subnets.bin
head -c $((3 * 1048576 + 4321)) /dev/urandom >"$PKG"

lab_up_routed "$NA" "$NB" none

for i in "${B_RECV[@]}"; do
	if lab_exec 0 ping -c 1 -W 3 "$(lab_addr "$i")" >/dev/null 2>&1; then
		pass "the router forwards unicast: h0 reaches h$i at $(lab_addr "$i")"
	else
		fail "the router forwards unicast: h0 reaches h$i at $(lab_addr "$i")"
	fi
done

# receiver I CMD [ARGS...]: `treecast CMD` in host I, placing packages in
# OUT/hI/to; its pid in PIDS[I].
declare -A PIDS
receiver() {
	local i=$1 cmd=$2
	shift 2
	mkdir -p "$OUT/h$i/home"
	lab_spawn "$i" "$OUT/h$i.log" env HOME="$OUT/h$i/home" timeout -k 5 120 "$BIN" "$cmd" --name "h$i" \
		--iface eth0 --group subnets --trust-any --dir "$OUT/h$i/state" --to "$OUT/h$i/to" "$@"
	PIDS[$i]=$LAB_LAST_PID
}
receiver 1 join --timeout 60s
receiver 2 join --timeout 60s
receiver 3 serve --listen ":$PORT"
receiver 4 join --timeout 60s --listen ":$PORT"
receiver 5 join --timeout 60s --listen ":$PORT"
receiver 6 serve --listen ":$PORT"

# listening I [PORT]: host I has a TCP listener (on PORT, if given).
listening() {
	if [[ -n ${2:-} ]]; then
		[[ -n $(lab_exec "$1" ss -Hltn "sport = :$2" 2>/dev/null) ]]
	else
		[[ -n $(lab_exec "$1" ss -Hltn 2>/dev/null) ]]
	fi
}
for i in "${A_RECV[@]}" "${B_RECV[@]}"; do
	port=
	((i >= NA)) && port=$PORT
	for _ in $(seq 1 100); do listening "$i" "$port" && break; sleep 0.1; done
	if listening "$i" "$port"; then
		pass "h$i listens${port:+ on :$port}"
	else
		fail "h$i listens${port:+ on :$port} (log: $OUT/h$i.log)"
		tail -n 5 "$OUT/h$i.log" | sed 's/^/    | /'
	fi
done

# peers_on I: the names `treecast peers` finds from host I, sorted, comma-separated.
peers_on() {
	lab_exec "$1" env HOME="$OUT/h0/home" timeout -k 5 30 "$BIN" peers --json --iface eth0 --group subnets --wait 2s \
		2>>"$OUT/peers.log" | jq -r '[.peers[].name] | sort | join(",")' 2>>"$OUT/peers.log" || true
}
mkdir -p "$OUT/h0/home"
check_eq "mDNS does not pass the router: peers on subnet A finds h1 and h2 only" "$(peers_on 0)" "h1,h2"
check_eq "the receivers on subnet B do announce: peers there finds h3..h6" "$(peers_on 3)" "h3,h4,h5,h6"

PEERS_FILE=$OUT/fleet.txt
{
	echo "# the machines on subnet B that mDNS does not reach"
	echo "$(lab_addr 5):$PORT"
	echo "$(lab_addr 6):$PORT   # h6, a serve agent"
} >"$PEERS_FILE"
N=$((${#A_RECV[@]} + ${#B_RECV[@]}))
rc=0
t0=$SECONDS
lab_exec 0 env HOME="$OUT/h0/home" timeout -k 5 120 "$BIN" seed --expect "$N" --wait 20s --iface eth0 --group subnets \
	--peer "$(lab_addr 3):$PORT" --peer "$(lab_addr 4):$PORT" --peers "$PEERS_FILE" \
	--report "$OUT/report.json" "$PKG" >"$OUT/seed.log" 2>&1 || rc=$?
tail -n $((N + 3)) "$OUT/seed.log" | sed 's/^/    | /'
if ((rc == 0)); then
	pass "seed with --peer, --peer and --peers FILE: exit code 0 ($((SECONDS - t0)) s)"
else
	fail "seed with --peer, --peer and --peers FILE: exit code $rc, want 0 (log: $OUT/seed.log)"
fi

for i in "${A_RECV[@]}" "${B_RECV[@]}"; do
	if cmp -s "$PKG" "$OUT/h$i/to/$(basename "$PKG")"; then
		pass "h$i ($(lab_addr "$i")) holds a byte-identical copy"
	else
		fail "h$i ($(lab_addr "$i")) holds a byte-identical copy (log: $OUT/h$i.log)"
	fi
done
for i in 1 2 4 5; do
	pid=${PIDS[$i]}
	for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rc=0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" || true
		fail "join h$i exits within 20 s of the seed (log: $OUT/h$i.log)"
		continue
	fi
	wait "$pid" || rc=$?
	check_eq "join h$i exit code" "$rc" 0
done

R=$OUT/report.json
check_eq "report: outcome" "$(jq -r .outcome "$R" 2>/dev/null)" ok
check_eq "report: every receiver of both subnets is listed" \
	"$(jq -r '[.nodes[].name] | sort | join(",")' "$R" 2>/dev/null)" "h1,h2,h3,h4,h5,h6"
size=$(stat -c %s "$PKG")
for i in "${A_RECV[@]}" "${B_RECV[@]}"; do
	got=$(jq -r --arg n "h$i" '.nodes[] | select(.name == $n) | [.status, .bytes, (.addr | split(":")[0])] | join(" ")' "$R" 2>/dev/null || true)
	check_eq "report: h$i ok, all bytes, at its address" "$got" "ok $size $(lab_addr "$i")"
done
# Each tree has one root, so with receivers on both subnets some node fetches
# from one across the router: the relaying crosses it, not only the seed's
# connections.
# shellcheck disable=SC2016 # $net, $a are jq's
across=$(jq -r '(reduce .nodes[] as $n ({}; .[$n.id] = ($n.addr | split(".")[1]))) as $net
	| [.nodes[] | (.addr | split(".")[1]) as $a | .parents[] | select(. != "seed" and $net[.] != null and $net[.] != $a)] | length' "$R" 2>/dev/null || echo 0)
if ((across > 0)); then
	pass "receivers relayed to receivers across the router ($across of the tree links cross it)"
else
	fail "receivers relayed to receivers across the router (no tree link crosses it)"
fi
# shellcheck disable=SC2016 # $m and $n are jq's
echo "the trees (node <- its parent in each): $(jq -r '(reduce .nodes[] as $n ({}; .[$n.id] = $n.name)) as $m
	| [.nodes[] | "\(.name)<-\([.parents[] | $m[.] // .] | join(","))"] | join(" ")' "$R" 2>/dev/null || true)"
