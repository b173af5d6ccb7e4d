#!/usr/bin/env bash
# security.sh - the attacks a LAN makes possible, on the LAN lab: 1 trusted
# seed (h0), a foreign seed (h10), 8 `join` receivers (h1..h8) and a `serve`
# agent (h9), all trusting only the seed's key.
#   foreign   a seed with another key offers a package: every receiver
#             refuses it, the report names the refusal, nothing is applied;
#             the trusted seed then reaches them all
#   liar      h1 (an inner relay) flips a bit in chunk 4 whenever it relays
#             it: its children catch it, fetch the chunk elsewhere, and the
#             liar is reported; every honest node ends byte-identical and ok
#   replay    the agent applies v1, then v2; v2's captured session again is
#             answered "applied already" and runs nothing; v1's (older) is
#             refused and v2 stays in place; v2's replayed to an agent of
#             another group is refused
#   forged    a receiver accuses every relay it is given of corrupt data: the
#             seed fetches the blocks itself, convicts no one, and after two
#             unconfirmed complaints fetches on its word no more (it is not
#             failed for them: a relay can corrupt for one child alone)
#   silent    a receiver takes the session and then reports nothing: the
#             seed ends by its deadline and reports it
#   flood     one host holds 1,000 connections to an agent: a real seed's
#             session still reaches it
#   exec      the seed stops during a receiver's long --exec: the exec
#             finishes and join exits 0
#   secret    with --secret, a receiver without it is never offered the
#             session; those with it get identical copies
#   spoof     a host answers mDNS for the agent's node id from its own
#             address: peers marks it CONFLICT; the seed sends to neither
#   escape    a tar with a `../` entry: every node's extract fails naming the
#             entry and nothing lands outside its directory
# Prints PASS/FAIL per check and ends with "N passed, N failed".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

RATE=${SECURITY_RATE:-100mbit}
OUT=${OUT:-$ROOT/scripts/out/security-$LAB_PREFIX}
BIN=$OUT/treecast
N=8          # join receivers h1..h8
AGENT=9
FOREIGN=10

PASSED=0
FAILED=0
pass() { printf 'PASS: %s\n' "$*"; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; FAILED=$((FAILED + 1)); }
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name"; fi; }

finish() {
	local rc=$?
	lab_cleanup
	printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
	((FAILED == 0 && rc == 0)) || exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM

rm -rf "$OUT"
mkdir -p "$OUT"
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .)
"$BIN" keygen --out "$OUT/seed.key" >/dev/null
"$BIN" keygen --out "$OUT/foreign.key" >/dev/null
FP=$(awk '{print $3}' "$OUT/seed.key.pub")
TRUST=(--trust "$FP")
lab_up $((FOREIGN + 1)) "$RATE"

declare -A RPID
# join_all RUN ACTION...: a join on h1..h8 for run RUN, applying with ACTION
# (in which DIR stands for the host's own directory).
join_all() {
	local run=$1 i
	shift
	for ((i = 1; i <= N; i++)); do
		local dir=$OUT/$run/h$i args=()
		mkdir -p "$dir"
		for a in "$@"; do args+=("${a//DIR/$dir}"); done
		lab_spawn "$i" "$OUT/$run/h$i.log" "$BIN" join --name "h$i" --iface eth0 "${TRUST[@]}" \
			--dir "$dir/state" --timeout 60s "${args[@]}"
		RPID[$i]=$LAB_LAST_PID
	done
}
wait_joins() {
	local i
	JOIN_FAILS=0
	for ((i = 1; i <= N; i++)); do wait "${RPID[$i]}" 2>/dev/null || JOIN_FAILS=$((JOIN_FAILS + 1)); done
}
# seed HOST RUN KEY FILE [ARGS...]: runs a seed in the foreground; SEED_RC.
seed() {
	local host=$1 run=$2 key=$3 file=$4
	shift 4
	SEED_RC=0
	lab_exec "$host" "$BIN" seed --iface eth0 --key "$key" --report "$OUT/$run/report.json" "$@" "$file" \
		>"$OUT/$run/seed-h$host.log" 2>&1 || SEED_RC=$?
}
statuses() { jq -r '[.nodes[].status] | sort | unique | join(",")' "$1"; }

# --- foreign ---------------------------------------------------------------
run=foreign
mkdir -p "$OUT/$run"
head -c 3000000 /dev/urandom >"$OUT/$run/app.bin"
join_all "$run" --to DIR/out
seed "$FOREIGN" "$run" "$OUT/foreign.key" "$OUT/$run/app.bin" --expect "$N" --wait 20s
[[ $SEED_RC == 1 ]] && pass "foreign: the foreign seed exits 1" || fail "foreign: foreign seed exit $SEED_RC"
refused=$(jq '[.nodes[] | select(.status == "failed" and (.error | contains("not trusted")))] | length' "$OUT/$run/report.json")
[[ $refused == "$N" ]] && pass "foreign: the report names all $N refusals (not trusted)" || fail "foreign: $refused of $N refusals reported"
applied=$(find "$OUT/$run" -path "$OUT/$run/h*/out/*" -type f | wc -l)
[[ $applied == 0 ]] && pass "foreign: nothing was applied" || fail "foreign: $applied files applied"
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/app.bin" --expect "$N" --wait 20s
wait_joins
[[ $SEED_RC == 0 && $JOIN_FAILS == 0 ]] && pass "foreign: the trusted seed then reaches every receiver" || fail "foreign: seed exit $SEED_RC, $JOIN_FAILS joins failed"
same=0
for ((i = 1; i <= N; i++)); do cmp -s "$OUT/$run/app.bin" "$OUT/$run/h$i/out/app.bin" && same=$((same + 1)); done
[[ $same == "$N" ]] && pass "foreign: $N byte-identical copies" || fail "foreign: $same of $N copies identical"

# --- liar --------------------------------------------------------------------
run=liar
mkdir -p "$OUT/$run"
head -c 12000000 /dev/urandom >"$OUT/$run/app.bin"
join_all "$run" --to DIR/out
# h1's name sorts first, so the seed makes it an inner relay; restart it lying.
kill -TERM "${RPID[1]}"
wait "${RPID[1]}" 2>/dev/null || true
lab_spawn 1 "$OUT/$run/h1.log" "$BIN" join --name h1 --iface eth0 "${TRUST[@]}" --dir "$OUT/$run/h1/state" \
	--timeout 60s --to "$OUT/$run/h1/out" --fault-corrupt-chunk 4
RPID[1]=$LAB_LAST_PID
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/app.bin" --expect "$N" --wait 20s
wait_joins
[[ $SEED_RC == 1 ]] && pass "liar: seed exits 1 (the liar failed)" || fail "liar: seed exit $SEED_RC"
err=$(jq -r '.nodes[] | select(.name == "h1") | .error' "$OUT/$run/report.json")
[[ $err == *"corrupt block"*"(chunk 4)"* ]] && pass "liar: h1 reported: $err" || fail "liar: h1 reported '$err'"
ok=0
for ((i = 2; i <= N; i++)); do
	st=$(jq -r --arg n "h$i" '.nodes[] | select(.name == $n) | .status' "$OUT/$run/report.json")
	[[ $st == ok ]] && cmp -s "$OUT/$run/app.bin" "$OUT/$run/h$i/out/app.bin" && ok=$((ok + 1))
done
[[ $ok == $((N - 1)) ]] && pass "liar: every honest node ok and byte-identical" || fail "liar: $ok of $((N - 1)) honest nodes ok"

# --- replay ------------------------------------------------------------------
run=replay
mkdir -p "$OUT/$run/v1" "$OUT/$run/v2" "$OUT/$run/agent"
head -c 2000000 /dev/urandom >"$OUT/$run/v1/app.bin"
head -c 2500000 /dev/urandom >"$OUT/$run/v2/app.bin"
lab_spawn "$AGENT" "$OUT/$run/agent.log" "$BIN" serve --name agent --group replay --iface eth0 "${TRUST[@]}" \
	--dir "$OUT/$run/agent/state" --to "$OUT/$run/agent/out"
AGENT_PID=$LAB_LAST_PID
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/v1/app.bin" --group replay --expect 1 --wait 20s --fault-save-session "$OUT/$run/v1.session"
[[ $SEED_RC == 0 ]] && cmp -s "$OUT/$run/v1/app.bin" "$OUT/$run/agent/out/app.bin" && pass "replay: the agent applied v1" || fail "replay: v1 not applied (seed exit $SEED_RC)"
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/v2/app.bin" --group replay --expect 1 --wait 20s --fault-save-session "$OUT/$run/v2.session"
[[ $SEED_RC == 0 ]] && cmp -s "$OUT/$run/v2/app.bin" "$OUT/$run/agent/out/app.bin" && pass "replay: the agent applied v2" || fail "replay: v2 not applied (seed exit $SEED_RC)"
rm "$OUT/$run/agent/out/app.bin"
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/v2/app.bin" --group replay --expect 1 --wait 20s --fault-replay-session "$OUT/$run/v2.session"
st=$(jq -r '"\(.nodes[0].status) \(.nodes[0].received)"' "$OUT/$run/report.json")
[[ $SEED_RC == 0 && $st == "ok 0" && ! -e $OUT/$run/agent/out/app.bin ]] &&
	pass "replay: v2's session replayed is answered 'applied already', nothing applied again" ||
	fail "replay: seed exit $SEED_RC, status '$st'"
cp "$OUT/$run/v2/app.bin" "$OUT/$run/agent/out/app.bin"
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/v1/app.bin" --group replay --expect 1 --wait 20s --fault-replay-session "$OUT/$run/v1.session"
err=$(jq -r '.nodes[0].error' "$OUT/$run/report.json")
[[ $SEED_RC == 1 && $err == *downgrade* ]] && pass "replay: v1's older session replayed is refused: $err" || fail "replay: seed exit $SEED_RC, error '$err'"
cmp -s "$OUT/$run/v2/app.bin" "$OUT/$run/agent/out/app.bin" && pass "replay: v2 is still in place" || fail "replay: the agent's copy is no longer v2"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null && pass "replay: the agent stops cleanly on SIGTERM" || fail "replay: agent exit $?"
# The captured session of group "replay", replayed to an agent of another group.
lab_spawn "$AGENT" "$OUT/$run/other.log" "$BIN" serve --name other --group other --iface eth0 "${TRUST[@]}" \
	--dir "$OUT/$run/other/state" --to "$OUT/$run/other/out"
AGENT_PID=$LAB_LAST_PID
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/v2/app.bin" --group other --expect 1 --wait 20s --fault-replay-session "$OUT/$run/v2.session"
err=$(jq -r '.nodes[0].error' "$OUT/$run/report.json")
[[ $SEED_RC == 1 && $err == *'group "replay"'* && ! -e $OUT/$run/other/out/app.bin ]] && pass "replay: a session for group replay is refused by group other: $err" ||
	fail "replay: to another group: seed exit $SEED_RC, error '$err'"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true

# --- forged complaint ----------------------------------------------------------
run=forged
mkdir -p "$OUT/$run"
head -c 8000000 /dev/urandom >"$OUT/$run/app.bin"
join_all "$run" --to DIR/out
# Its name sorts last, so it is a leaf with a relay for a parent in each tree.
lab_spawn "$AGENT" "$OUT/$run/accuser.log" "$BIN" join --name z-accuser --iface eth0 "${TRUST[@]}" \
	--dir "$OUT/$run/accuser/state" --timeout 60s --to "$OUT/$run/accuser/out" --fault-accuse
ACC_PID=$LAB_LAST_PID
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/app.bin" --expect $((N + 1)) --wait 20s
wait_joins
kill -TERM "$ACC_PID" 2>/dev/null || true
wait "$ACC_PID" 2>/dev/null || true
checked=$(grep -c "complaint not confirmed" "$OUT/$run/seed-h0.log" || true)
((checked <= 2)) && grep -q "complaints are checked no more" "$OUT/$run/seed-h0.log" &&
	pass "forged: the seed checked $checked of the accuser's complaints, then no more" ||
	fail "forged: the seed checked $checked of the accuser's complaints (want at most 2, then 'checked no more')"
acc=$(jq -r '.nodes[] | select(.name == "z-accuser") | "\(.status): \(.error)"' "$OUT/$run/report.json")
[[ $acc != *accused* ]] && pass "forged: the accuser is not failed for its complaints: $acc" || fail "forged: the accuser: '$acc'"
ok=0
for ((i = 1; i <= N; i++)); do
	st=$(jq -r --arg n "h$i" '.nodes[] | select(.name == $n) | .status' "$OUT/$run/report.json")
	[[ $st == ok ]] && cmp -s "$OUT/$run/app.bin" "$OUT/$run/h$i/out/app.bin" && ok=$((ok + 1))
done
[[ $ok == "$N" ]] && pass "forged: every accused relay and every other honest node ok and byte-identical" || fail "forged: $ok of $N honest nodes ok"

# --- silent receiver -----------------------------------------------------------
run=silent
mkdir -p "$OUT/$run"
head -c 4000000 /dev/urandom >"$OUT/$run/app.bin"
printf '[relay]\nsession_grace = "5s"\n' >"$OUT/$run/grace.toml"
join_all "$run" --to DIR/out
lab_spawn "$AGENT" "$OUT/$run/silent.log" "$BIN" join --name z-silent --iface eth0 "${TRUST[@]}" \
	--dir "$OUT/$run/silent/state" --timeout 60s --to "$OUT/$run/silent/out" --fault-silent
SIL_PID=$LAB_LAST_PID
t0=$(date +%s.%N)
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/app.bin" --expect $((N + 1)) --wait 20s --config "$OUT/$run/grace.toml"
t1=$(date +%s.%N)
wait_joins
kill -TERM "$SIL_PID" 2>/dev/null || true
wait "$SIL_PID" 2>/dev/null || true
took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
sil=$(jq -r '.nodes[] | select(.name == "z-silent") | "\(.status): \(.error)"' "$OUT/$run/report.json")
[[ $SEED_RC == 1 && $sil == "failed: timed out"* ]] && pass "silent: the seed ends after ${took}s and reports the silent node: $sil" ||
	fail "silent: seed exit $SEED_RC after ${took}s, silent node '$sil'"
ok=$(jq '[.nodes[] | select(.name != "z-silent" and .status == "ok")] | length' "$OUT/$run/report.json")
[[ $ok == "$N" && $JOIN_FAILS == 0 ]] && pass "silent: every honest node ok" || fail "silent: $ok of $N ok, $JOIN_FAILS joins failed"

# --- connection flood ------------------------------------------------------------
run=flood
mkdir -p "$OUT/$run"
head -c 2000000 /dev/urandom >"$OUT/$run/app.bin"
lab_spawn "$AGENT" "$OUT/$run/agent.log" "$BIN" serve --name agent --group flood --iface eth0 "${TRUST[@]}" \
	--listen :7070 --dir "$OUT/$run/agent/state" --to "$OUT/$run/agent/out"
AGENT_PID=$LAB_LAST_PID
# 1,000 connections from one host, every other one sending a control hello
# and nothing more; they stay open for 60 s.
hello='\x54\x43\x53\x54\x03\x01\x00\x00\x00\x26\x01'$(printf '\\x00%.0s' $(seq 37))
lab_spawn "$FOREIGN" "$OUT/$run/flood.log" bash -c '
	ulimit -n 4096
	for i in $(seq 1000); do
		exec {fd}<>/dev/tcp/'"$(lab_addr "$AGENT")"'/7070 || { echo "connect $i failed"; continue; }
		((i % 2)) && printf "'"$hello"'" >&$fd 2>/dev/null
	done
	echo flooding; sleep 60'
FLOOD_PID=$LAB_LAST_PID
for _ in $(seq 1 200); do grep -q flooding "$OUT/$run/flood.log" 2>/dev/null && break; sleep 0.1; done
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/app.bin" --group flood --expect 1 --wait 20s
[[ $SEED_RC == 0 ]] && cmp -s "$OUT/$run/app.bin" "$OUT/$run/agent/out/app.bin" &&
	pass "flood: with 1,000 connections held from one host, the seed's session reaches the agent" ||
	fail "flood: seed exit $SEED_RC ($(grep -c . "$OUT/$run/flood.log") flood log lines)"
kill -TERM "$AGENT_PID" "$FLOOD_PID" 2>/dev/null || true
wait "$AGENT_PID" "$FLOOD_PID" 2>/dev/null || true

# --- seed lost during a long --exec ----------------------------------------------------
run=exec
mkdir -p "$OUT/$run/h1"
head -c 3000000 /dev/urandom >"$OUT/$run/app.bin"
lab_spawn 1 "$OUT/$run/h1.log" "$BIN" join --name h1 --group exec --iface eth0 "${TRUST[@]}" --dir "$OUT/$run/h1/state" \
	--timeout 60s --exec "touch $OUT/$run/h1/started; sleep 4; cp \"\$TREECAST_FILE\" $OUT/$run/h1/out.bin"
J1=$LAB_LAST_PID
lab_spawn 0 "$OUT/$run/seed.log" "$BIN" seed --iface eth0 --key "$OUT/seed.key" --group exec --expect 1 --wait 20s "$OUT/$run/app.bin"
SPID=$LAB_LAST_PID
for _ in $(seq 1 300); do [[ -e $OUT/$run/h1/started ]] && break; sleep 0.1; done
kill -INT "$SPID" 2>/dev/null || true
wait "$SPID" 2>/dev/null || true
rc=0
wait "$J1" || rc=$?
[[ -e $OUT/$run/h1/started && $rc == 0 ]] && cmp -s "$OUT/$run/app.bin" "$OUT/$run/h1/out.bin" &&
	pass "exec: the seed stopped during --exec; the exec finished and join exits 0" ||
	fail "exec: join exit $rc, exec started: $([[ -e $OUT/$run/h1/started ]] && echo yes || echo no)"

# --- fleet secret -------------------------------------------------------------------
run=secret
mkdir -p "$OUT/$run"
head -c 4000000 /dev/urandom >"$OUT/$run/app.bin"
"$BIN" secret --out "$OUT/fleet.secret" >/dev/null
join_all "$run" --to DIR/out --secret "$OUT/fleet.secret"
lab_spawn "$AGENT" "$OUT/$run/outsider.log" "$BIN" --verbose join --name z-outsider --iface eth0 "${TRUST[@]}" \
	--dir "$OUT/$run/outsider/state" --timeout 40s --to "$OUT/$run/outsider/out"
OUT_PID=$LAB_LAST_PID
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/app.bin" --expect $((N + 1)) --wait 20s --secret "$OUT/fleet.secret"
wait_joins
kill -TERM "$OUT_PID" 2>/dev/null || true
wait "$OUT_PID" 2>/dev/null || true
o=$(jq -r '.nodes[] | select(.name == "z-outsider") | "\(.status): \(.error)"' "$OUT/$run/report.json")
[[ $SEED_RC == 1 && $o == failed:*"no fleet secret"* && ! -e $OUT/$run/outsider/out/app.bin ]] &&
	pass "secret: a receiver without the secret is not offered the session: $o" || fail "secret: seed exit $SEED_RC, outsider '$o'"
! grep -q "session started" "$OUT/$run/outsider.log" && pass "secret: the outsider never saw the session" || fail "secret: the outsider started a session"
same=0
for ((i = 1; i <= N; i++)); do cmp -s "$OUT/$run/app.bin" "$OUT/$run/h$i/out/app.bin" && same=$((same + 1)); done
[[ $same == "$N" && $JOIN_FAILS == 0 ]] && pass "secret: $N receivers with the secret byte-identical" || fail "secret: $same of $N identical, $JOIN_FAILS joins failed"

# --- spoofed mDNS ------------------------------------------------------------------
run=spoof
mkdir -p "$OUT/$run/spoofer/state"
head -c 1000000 /dev/urandom >"$OUT/$run/app.bin"
lab_spawn "$AGENT" "$OUT/$run/agent.log" "$BIN" serve --name agent --group spoof --iface eth0 "${TRUST[@]}" \
	--dir "$OUT/$run/agent/state" --to "$OUT/$run/agent/out"
AGENT_PID=$LAB_LAST_PID
for _ in $(seq 1 100); do [[ -s $OUT/$run/agent/state/node-id ]] && break; sleep 0.1; done
# A host that answers for the agent's node id from its own address.
cp "$OUT/$run/agent/state/node-id" "$OUT/$run/spoofer/state/node-id"
lab_spawn "$FOREIGN" "$OUT/$run/spoofer.log" "$BIN" serve --name agent --group spoof --iface eth0 --trust-any \
	--dir "$OUT/$run/spoofer/state" --to "$OUT/$run/spoofer/out"
SPOOF_PID=$LAB_LAST_PID
sleep 1
lab_exec 0 "$BIN" peers --iface eth0 --group spoof --wait 3s >"$OUT/$run/peers.txt" 2>&1 || true
grep -q CONFLICT "$OUT/$run/peers.txt" && grep -q "$(lab_addr "$AGENT")" "$OUT/$run/peers.txt" && grep -q "$(lab_addr "$FOREIGN")" "$OUT/$run/peers.txt" &&
	pass "spoof: peers marks the id answered from two addresses CONFLICT, with both" || fail "spoof: peers printed: $(tr '\n' '|' <"$OUT/$run/peers.txt")"
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/app.bin" --group spoof --expect 1 --wait 5s
[[ $SEED_RC == 3 && ! -e $OUT/$run/spoofer/out/app.bin && ! -e $OUT/$run/agent/out/app.bin ]] && grep -q "two addresses" "$OUT/$run/seed-h0.log" &&
	pass "spoof: the seed sends to neither address, and says why" || fail "spoof: seed exit $SEED_RC"
kill -TERM "$AGENT_PID" "$SPOOF_PID" 2>/dev/null || true
wait "$AGENT_PID" "$SPOOF_PID" 2>/dev/null || true

# --- escape ------------------------------------------------------------------
run=escape
mkdir -p "$OUT/$run/src/pkg"
echo "harmless" >"$OUT/$run/src/pkg/readme.txt"
echo "planted" >"$OUT/$run/src/escape.txt"
# -P keeps the "../" in the member name, as a hostile archive would.
(cd "$OUT/$run/src/pkg" && tar -cPf "$OUT/$run/evil.tar" readme.txt ../escape.txt)
rm "$OUT/$run/src/escape.txt"
join_all "$run" --extract DIR/x
seed 0 "$run" "$OUT/seed.key" "$OUT/$run/evil.tar" --expect "$N" --wait 20s
wait_joins
[[ $SEED_RC == 1 ]] && pass "escape: seed exits 1" || fail "escape: seed exit $SEED_RC"
named=$(jq '[.nodes[] | select(.status == "failed" and (.error | contains("../escape.txt")))] | length' "$OUT/$run/report.json")
[[ $named == "$N" ]] && pass "escape: every node's apply failed naming ../escape.txt" || fail "escape: $named of $N errors name the entry"
outside=$(find "$OUT/$run" -name escape.txt | wc -l)
[[ $outside == 0 ]] && pass "escape: nothing landed outside the extract dirs" || fail "escape: $outside escape.txt files found"
inside=$(find "$OUT/$run" -path "$OUT/$run/h*/x/*" -type f | wc -l)
[[ $inside == 0 ]] && pass "escape: nothing partial in the extract dirs" || fail "escape: $inside files in extract dirs"
