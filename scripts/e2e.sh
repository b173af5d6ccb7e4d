#!/usr/bin/env bash
# e2e.sh - the real treecast binary on an emulated LAN (scripts/lab.sh):
# 1 seed (h0) + 9 receivers (h1..h9) on a bridge, links shaped full-duplex.
#
# Runs, in one lab:
#   A  a .tar.gz package; receivers apply it with --to, --extract and --exec
#   B  a 0-byte package
#   C  5 MiB + 123 bytes with --chunk-size 1MiB (last chunk short)
#   D  one receiver's --exec prints several lines and exits 3: seed exits 1,
#      that node "failed", others ok; the seed's --json on stdout is the report,
#      its table on stderr one line per node, its log lines in treecast's style
# h9 is a `treecast serve` agent for the whole time: it must receive A, B, C
# and D one after another, then stop on SIGTERM.
# Then: a `[relay] heartbeat = "0s"` config exits 2 naming the key; a
# group-readable seed key exits 1 with the chmod that fixes it; a `join` on
# the serve agent's --dir exits 1; what can be checked before the first byte
# is sent (--to/--extract a file, under /proc or /sys, on a read-only
# filesystem; --report in a missing folder; a --key that does not exist; a
# bad size or duration) exits 2 in one line and sends nothing; flags after
# FILE; the same package to the serve agent again is up to date and its
# --exec does not run, with --force it runs again; a report on a full disk
# exits 4; the serve agent logs its SIGTERM;
# Ctrl-C while looking for receivers and mid-transfer exits 130 with the
# table and the report, and the same command again resumes; `join` with no
# session exits 3 after its --timeout; `seed` with no receivers exits 3
# after its --wait, and writes its report; `peers --json` parses.
#
# Prints PASS/FAIL per check and ends with "N passed, N failed"; exits 1 if
# any check failed.
#
# Env: E2E_RATE (link rate, default 100mbit), E2E_KEEP=1 (keep $OUT),
#      OUT (build + work dir, default scripts/out/e2e-$LAB_PREFIX),
#      E2E_BIN (use this binary instead of building one).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

RATE=${E2E_RATE:-100mbit}
OUT=${OUT:-$ROOT/scripts/out/e2e-$LAB_PREFIX}
WORK=$OUT/work
LOGS=$OUT/logs
BIN=$OUT/treecast
HOSTS=10     # h0 seed, h1..h8 join, h9 serve
RECEIVERS=9
# Receivers must trust the seed's key; change it here for every receiver.
TRUST_ARGS=(--trust-any)
GROUP_ARGS=(--group e2e)
IFACE_ARGS=(--iface eth0)

PASSED=0
FAILED=0
FINISHED=
SERVE_PID=

pass() {
	printf 'PASS: %s\n' "$*"
	PASSED=$((PASSED + 1))
}
fail() {
	printf 'FAIL: %s\n' "$*"
	FAILED=$((FAILED + 1))
}
# check NAME CMD... : PASS if CMD succeeds.
check() {
	local name=$1
	shift
	if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name"; fi
}
# check_eq NAME GOT WANT
check_eq() {
	if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1 (got '$2', want '$3')"; fi
}
say() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/    | /'; }

# tmpfs mounts made for the tests (a full disk, a read-only one).
MOUNTS=()

on_exit() {
	local rc=$?
	set +e
	lab_cleanup
	for m in "${MOUNTS[@]}"; do umount "$m"; done
	if [[ -z $FINISHED ]]; then
		fail "e2e stopped early (exit $rc); logs in $LOGS"
		echo "$PASSED passed, $FAILED failed"
		exit 1
	fi
	if ((FAILED == 0)) && [[ -z ${E2E_KEEP:-} ]]; then
		rm -rf "$OUT"
	else
		echo "logs and files kept in $OUT"
	fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# host_env I : sets HENV to an `env ...` prefix giving host I its own HOME and
# config dirs, as a separate machine has.
HENV=()
host_env() {
	local h=$WORK/h$1/home
	mkdir -p "$h"
	HENV=(env "HOME=$h" "XDG_CONFIG_HOME=$h/.config" "XDG_CACHE_HOME=$h/.cache" "XDG_DATA_HOME=$h/.local/share")
}

sha() { sha256sum "$1" | awk '{print $1}'; }
fsize() { stat -c %s "$1"; }

# start_join I LOG ARGS... : `treecast join` in host I, pid in JOIN_PIDS[I]
declare -A JOIN_PIDS
start_join() {
	local i=$1 log=$2
	shift 2
	host_env "$i"
	lab_spawn "$i" "$log" "${HENV[@]}" timeout -k 10 150 "$BIN" join \
		--name "h$i" "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" --timeout 60s \
		--dir "$WORK/h$i" "${TRUST_ARGS[@]}" "$@"
	JOIN_PIDS[$i]=$LAB_LAST_PID
}

# wait_joins RUN : waits for every join of this run, checks exit codes
# (all 0 unless listed in WANT_FAIL).
declare -A JOIN_RC
# A join that is still running $JOIN_GRACE s after the seed finished is
# stopped (and fails), so a broken build fails fast instead of at --timeout.
JOIN_GRACE=${E2E_JOIN_GRACE:-20}
wait_joins() {
	local run=$1 i rc pid deadline=$((SECONDS + JOIN_GRACE))
	for i in "${!JOIN_PIDS[@]}"; do
		pid=${JOIN_PIDS[$i]}
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			fail "$run: join h$i still running ${JOIN_GRACE}s after the seed finished; stopped it"
			kill -TERM "$pid" 2>/dev/null || true
		fi
		rc=0
		wait "$pid" || rc=$?
		JOIN_RC[$i]=$rc
	done
	for i in $(printf '%s\n' "${!JOIN_PIDS[@]}" | sort -n); do
		rc=${JOIN_RC[$i]}
		if [[ " ${WANT_FAIL:-} " == *" $i "* ]]; then
			if ((rc != 0)); then pass "$run: join h$i exits non-zero ($rc) after its apply failed"; else fail "$run: join h$i exit code 0, want non-zero"; fi
		else
			if ((rc == 0)); then pass "$run: join h$i exit code 0"; else fail "$run: join h$i exit code $rc, want 0 (log: $LOGS/$run-h$i.log)"; tail -n 15 "$LOGS/$run-h$i.log" 2>/dev/null | indent; fi
		fi
	done
	JOIN_PIDS=()
	JOIN_RC=()
}

# run_seed RUN PKG WANT_RC [EXTRA SEED ARGS...] : seed in h0, report in
# $WORK/RUN.json; with SEED_STDOUT=FILE, its stdout goes to FILE and only
# its stderr to the log.
run_seed() {
	local run=$1 pkg=$2 want=$3 rc=0
	shift 3
	local report=$WORK/$run.json log=$LOGS/$run-seed.log
	host_env 0
	local cmd=("${HENV[@]}" timeout -k 10 150 "$BIN" seed --expect "$RECEIVERS" --wait 30s
		"${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" --report "$report" "$@" "$pkg")
	if [[ -n ${SEED_STDOUT:-} ]]; then
		lab_exec 0 "${cmd[@]}" >"$SEED_STDOUT" 2>"$log" || rc=$?
	else
		lab_exec 0 "${cmd[@]}" >"$log" 2>&1 || rc=$?
	fi
	echo "seed output (last lines):"
	tail -n 20 "$LOGS/$run-seed.log" | indent
	if ((rc == want)); then pass "$run: seed exit code $rc"; else fail "$run: seed exit code $rc, want $want (log: $LOGS/$run-seed.log)"; fi
}

# check_report RUN PKG [FAILED_NAME] : the report's package block, 9 nodes,
# each ok with bytes == size, except FAILED_NAME (status failed).
check_report() {
	local run=$1 pkg=$2 failed=${3:-} r=$WORK/$1.json size name sum
	size=$(fsize "$pkg") name=$(basename "$pkg") sum=$(sha "$pkg")
	if ! jq -e . "$r" >/dev/null 2>&1; then
		fail "$run: report $r is valid JSON"
		return
	fi
	check_eq "$run: report package.name" "$(jq -r '.package.name' "$r")" "$name"
	check_eq "$run: report package.size" "$(jq -r '.package.size' "$r")" "$size"
	check_eq "$run: report package.sha256" "$(jq -r '.package.sha256' "$r")" "$sum"
	check_eq "$run: report expected" "$(jq -r '.expected' "$r")" "$RECEIVERS"
	check "$run: report seconds is a number >= 0" jq -e '(.seconds|type) == "number" and .seconds >= 0' "$r"
	check_eq "$run: report has $RECEIVERS nodes" "$(jq -r '.nodes | length' "$r")" "$RECEIVERS"
	check_eq "$run: report node names are h1..h9" \
		"$(jq -r '[.nodes[].name] | sort | join(",")' "$r")" "h1,h2,h3,h4,h5,h6,h7,h8,h9"
	local i n st bytes err addr
	for ((i = 1; i <= RECEIVERS; i++)); do
		n=$(jq -c --arg n "h$i" '[.nodes[] | select(.name == $n)][0] // empty' "$r")
		[[ -n $n ]] || { fail "$run: report has node h$i"; continue; }
		st=$(jq -r '.status' <<<"$n") bytes=$(jq -r '.bytes' <<<"$n") err=$(jq -r '.error // ""' <<<"$n")
		addr=$(jq -r '.addr // ""' <<<"$n")
		if [[ h$i == "$failed" ]]; then
			check_eq "$run: node h$i status" "$st" failed
			# Not just any "3": the command text itself is `exit 3`.
			if grep -Eiq '(status|code)[^0-9]{0,3}3([^0-9]|$)' <<<"$err"; then
				pass "$run: node h$i error mentions status 3 ($err)"
			else
				fail "$run: node h$i error mentions status 3 (error: '$err')"
			fi
		else
			if [[ $st == ok && $bytes == "$size" ]]; then
				pass "$run: node h$i ok, bytes $bytes"
			else
				fail "$run: node h$i status '$st' bytes '$bytes', want ok $size${err:+ (error: $err)}"
			fi
		fi
		if [[ $addr == *"$(lab_addr "$i")"* ]]; then pass "$run: node h$i addr $addr"; else fail "$run: node h$i addr '$addr', want $(lab_addr "$i")"; fi
	done
}

# check_copy RUN WHAT PKG FILE
check_copy() {
	if [[ -f $4 ]] && cmp -s "$3" "$4"; then pass "$1: $2 byte-identical"; else fail "$1: $2 byte-identical ($4)"; fi
}

# exec_cmd DESTDIR : an --exec command that copies the package and records
# name and sha256 from the environment treecast sets.
exec_cmd() {
	# shellcheck disable=SC2016 # $TREECAST_* are for the receiver's shell
	printf 'cp "$TREECAST_FILE" %q && echo "$TREECAST_NAME $TREECAST_SHA256" > %q && echo "applied $TREECAST_NAME"' "$1/exec-copy" "$1/exec-info"
}
check_exec() {
	local run=$1 i=$2 pkg=$3 d=$4
	check_copy "$run" "h$i --exec copy of \$TREECAST_FILE" "$pkg" "$d/exec-copy"
	check_eq "$run: h$i --exec saw \$TREECAST_NAME \$TREECAST_SHA256" "$(cat "$d/exec-info" 2>/dev/null)" "$(basename "$pkg") $(sha "$pkg")"
}

# ---------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$WORK" "$LOGS"

say "build"
if [[ -n ${E2E_BIN:-} ]]; then
	cp "$E2E_BIN" "$BIN"
	pass "build (using $E2E_BIN)"
elif (cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .) >"$LOGS/build.log" 2>&1; then
	pass "build: CGO_ENABLED=0 go build"
else
	fail "build: CGO_ENABLED=0 go build"
	indent <"$LOGS/build.log"
	FINISHED=1
	echo "$PASSED passed, $FAILED failed"
	exit 1
fi
"$BIN" version 2>&1 | head -n 3 | indent || true

say "lab: $HOSTS hosts at $RATE"
lab_up "$HOSTS" "$RATE"
if lab_mcast_check >"$LOGS/mcast.log" 2>&1; then pass "lab: mDNS multicast reaches every host"; else fail "lab: mDNS multicast reaches every host"; indent <"$LOGS/mcast.log"; fi

# ---- the serve agent (h9), for runs A-D ----
SERVE_DEST=$WORK/dest/h9/serve
mkdir -p "$SERVE_DEST"
# Its --exec appends the package's name here: one line per run of it.
SERVE_EXECS=$WORK/dest/h9/execs
host_env 9
# shellcheck disable=SC2016 # $TREECAST_NAME is for the agent's shell
lab_spawn 9 "$LOGS/serve-h9.log" "${HENV[@]}" timeout -k 10 600 "$BIN" serve \
	--name h9 "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" --dir "$WORK/h9" "${TRUST_ARGS[@]}" --to "$SERVE_DEST" \
	--exec "$(printf 'echo "$TREECAST_NAME" >> %q' "$SERVE_EXECS")"
SERVE_PID=$LAB_LAST_PID

# ---- run A: a .tar.gz, applied with --to, --extract and --exec ----
say "run A: .tar.gz package, receivers --to / --extract / --exec, h9 serve --to"
SRC=$WORK/src
mkdir -p "$SRC/app/bin" "$SRC/app/data/nested/deeper" "$SRC/app/empty-dir"
head -c 3000000 /dev/urandom >"$SRC/app/data/blob.bin"
head -c 1048576 /dev/urandom >"$SRC/app/data/nested/chunk.bin"
head -c 777 /dev/urandom >"$SRC/app/data/nested/deeper/odd.bin"
: >"$SRC/app/data/empty.txt"
printf '#!/bin/sh\necho hello from treecast\n' >"$SRC/app/bin/run.sh"
chmod 755 "$SRC/app/bin/run.sh"
printf 'name = "demo"\nversion = 3\n' >"$SRC/app/config.toml"
PKG_A=$WORK/pkg/app-1.0.tar.gz
mkdir -p "$(dirname "$PKG_A")"
tar -C "$SRC" -czf "$PKG_A" app
echo "package $(basename "$PKG_A"): $(fsize "$PKG_A") bytes"

declare -A MODE
for i in 1 2; do MODE[$i]=to; done
for i in 3 4 5 8; do MODE[$i]=extract; done
for i in 6 7; do MODE[$i]="exec"; done
for i in 1 2 3 4 5 6 7 8; do
	d=$WORK/dest/h$i/A
	mkdir -p "$d"
	case ${MODE[$i]} in
	to) start_join "$i" "$LOGS/A-h$i.log" --to "$d" ;;
	extract) start_join "$i" "$LOGS/A-h$i.log" --extract "$d" ;;
	exec) start_join "$i" "$LOGS/A-h$i.log" --exec "$(exec_cmd "$d")" ;;
	esac
done
run_seed A "$PKG_A" 0
wait_joins A
for i in 1 2 3 4 5 6 7 8; do
	d=$WORK/dest/h$i/A
	case ${MODE[$i]} in
	to) check_copy A "h$i --to copy" "$PKG_A" "$d/$(basename "$PKG_A")" ;;
	extract)
		if diff -r "$SRC/app" "$d/app" >"$LOGS/A-h$i.diff" 2>&1; then
			pass "A: h$i --extract tree identical (diff -r)"
		else
			fail "A: h$i --extract tree identical (diff -r)"
			head -n 10 "$LOGS/A-h$i.diff" | indent
		fi
		check "A: h$i --extract kept the executable bit of app/bin/run.sh" test -x "$d/app/bin/run.sh"
		check "A: h$i --extract kept the empty directory" test -d "$d/app/empty-dir"
		;;
	exec) check_exec A "$i" "$PKG_A" "$d" ;;
	esac
done
check_report A "$PKG_A"
for i in 6 7; do
	check_eq "A: report has h$i's --exec stdout" "$(jq -r --arg n "h$i" '.nodes[] | select(.name == $n) | .output' "$WORK/A.json")" "applied $(basename "$PKG_A")"
done

# ---- run B: a 0-byte package ----
say "run B: 0-byte package"
PKG_B=$WORK/pkg/empty.bin
: >"$PKG_B"
for i in 1 2 3 4 5 6 7 8; do
	d=$WORK/dest/h$i/B
	mkdir -p "$d"
	if ((i <= 5)); then
		start_join "$i" "$LOGS/B-h$i.log" --to "$d"
	else
		start_join "$i" "$LOGS/B-h$i.log" --exec "$(exec_cmd "$d")"
	fi
done
run_seed B "$PKG_B" 0
wait_joins B
for i in 1 2 3 4 5 6 7 8; do
	d=$WORK/dest/h$i/B
	if ((i <= 5)); then check_copy B "h$i --to empty file" "$PKG_B" "$d/empty.bin"; else check_exec B "$i" "$PKG_B" "$d"; fi
done
check_report B "$PKG_B"

# ---- run C: odd size, 1 MiB chunks ----
say "run C: 5 MiB + 123 bytes, --chunk-size 1MiB"
PKG_C=$WORK/pkg/odd-size.img
head -c $((5 * 1048576 + 123)) /dev/urandom >"$PKG_C"
for i in 1 2 3 4 5 6 7 8; do
	d=$WORK/dest/h$i/C
	mkdir -p "$d"
	if ((i % 2)); then
		start_join "$i" "$LOGS/C-h$i.log" --to "$d"
	else
		start_join "$i" "$LOGS/C-h$i.log" --exec "$(exec_cmd "$d")"
	fi
done
run_seed C "$PKG_C" 0 --chunk-size 1MiB
wait_joins C
for i in 1 2 3 4 5 6 7 8; do
	d=$WORK/dest/h$i/C
	if ((i % 2)); then check_copy C "h$i --to copy" "$PKG_C" "$d/odd-size.img"; else check_exec C "$i" "$PKG_C" "$d"; fi
done
check_report C "$PKG_C"
check "C: the seed's progress is in the package's bytes (what a node holds on average)" \
	grep -qF "100.0%  5.0 MiB of 5.0 MiB per node on average" "$LOGS/C-seed.log"
check "C: no progress line says 0 B/s" bash -c "! grep -q ' 0 B/s' '$LOGS/C-seed.log'"

# ---- run D: one receiver's apply fails ----
say "run D: h1's --exec prints lines and exits 3, the others must still succeed; seed --json"
PKG_D=$WORK/pkg/fail-case.bin
head -c $((1048576 + 7)) /dev/urandom >"$PKG_D"
for i in 1 2 3 4 5 6 7 8; do
	d=$WORK/dest/h$i/D
	mkdir -p "$d"
	if ((i == 1)); then
		start_join "$i" "$LOGS/D-h$i.log" --exec 'echo unpacking; echo "E: first problem" >&2; printf "\tE: second\nE: third\n" >&2; exit 3'
	else
		start_join "$i" "$LOGS/D-h$i.log" --to "$d"
	fi
done
SEED_STDOUT=$WORK/D-stdout.json run_seed D "$PKG_D" 1 --json
WANT_FAIL="1" wait_joins D
for i in 2 3 4 5 6 7 8; do
	check_copy D "h$i --to copy" "$PKG_D" "$WORK/dest/h$i/D/fail-case.bin"
done
check_report D "$PKG_D" h1
D_OUT=$WORK/D-stdout.json
D_LOG=$LOGS/D-seed.log
check "D: seed --json: stdout is one JSON document" jq -e -s 'length == 1' "$D_OUT"
check_eq "D: seed --json: nodes, outcome" "$(jq -c '[(.nodes | length), .outcome]' "$D_OUT" 2>/dev/null)" "[$RECEIVERS,\"failed\"]"
check "D: seed --json: stdout is the --report document" cmp -s "$D_OUT" "$WORK/D.json"
check_eq "D: the table (on stderr) has one line per node" "$(grep -cE '^h[1-9] +[0-9a-f]{8} ' "$D_LOG")" "$RECEIVERS"
check "D: h1's line has its error flattened" grep -qE '^h1 +[0-9a-f]{8} .* failed .*status 3: E: first problem \| E: second \| E: third$' "$D_LOG"
check "D: no line of the command's output stands alone" bash -c "! grep -qE '^(unpacking|E: |[[:space:]]+E: )' '$D_LOG'"
check_eq "D: the report has h1's output, stdout and stderr" \
	"$(jq -r '.nodes[] | select(.name == "h1") | .output | split("\n") | sort | join(",")' "$D_OUT")" "$(printf '\tE: second,E: first problem,E: third,unpacking')"
check "D: the seed warns in treecast's style" grep -qE '^treecast: warning: node failed: h1 \([0-9a-f]{8}\): run `' "$D_LOG"
check "D: no log line in slog's text format" bash -c "! grep -qE '(^| )(time|level|msg)=' '$D_LOG'"
check_eq "D: the last line names why it failed" "$(tail -n 1 "$D_LOG")" "treecast: 1 of $RECEIVERS nodes failed"

# ---- peers, and fewer receivers than expected ----
say "peers lists the idle agent; a seed expecting 2 finds 1 and exits 1"
host_env 0
out=$(lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" peers "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" --wait 2s 2>"$LOGS/peers.log" || true)
printf '%s\n' "$out" >>"$LOGS/peers.log"
check "peers: lists h9 as idle in group e2e" grep -qE '^h9 +[0-9a-f]{8} +10\.77\.0\.10:[0-9]+ +e2e +idle' <<<"$out"
out=$(lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" peers --json "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" --wait 2s 2>>"$LOGS/peers.log" || true)
printf '%s\n' "$out" >>"$LOGS/peers.log"
check_eq "peers --json: h9 idle in group e2e, at its address" \
	"$(jq -r '.peers[] | select(.name == "h9") | [.state, .group, (.addr | split(":")[0])] | join(" ")' <<<"$out" 2>/dev/null)" "idle e2e $(lab_addr 9)"
PKG_E=$WORK/fewer.bin
head -c 100000 /dev/urandom >"$PKG_E"
rc=0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --expect 2 --wait 3s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--report "$WORK/E.json" "$PKG_E" >"$LOGS/fewer-seed.log" 2>&1 || rc=$?
check_eq "fewer than expected: seed exit code" "$rc" 1
check_eq "fewer than expected: report expected" "$(jq -r .expected "$WORK/E.json")" 2
check_eq "fewer than expected: the one found applied it" "$(jq -r '[.nodes[] | select(.status == "ok")] | length' "$WORK/E.json")" 1
check "fewer than expected: the summary says so" grep -qE ': 1 of 1 nodes ok, 0 failed, 1 of 2 expected not found; ' "$LOGS/fewer-seed.log"
check_eq "fewer than expected: the last line says why it failed" "$(tail -n 1 "$LOGS/fewer-seed.log")" "treecast: 1 of 2 expected were not found (found 1)"
check_copy E "h9 serve --to fewer.bin" "$PKG_E" "$SERVE_DEST/fewer.bin"

# ---- settings and runtime failures: exit 2 is for usage only ----
say "a bad setting exits 2 naming its key; an unprotected key and a --dir in use exit 1"
printf '[relay]\nheartbeat = "0s"\n' >"$WORK/bad-heartbeat.toml"
rc=0
host_env 1
lab_exec 1 "${HENV[@]}" timeout -k 10 60 "$BIN" join --config "$WORK/bad-heartbeat.toml" --name h1 "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--timeout 5s --dir "$WORK/h1" "${TRUST_ARGS[@]}" --to "$WORK/dest/h1" >"$LOGS/bad-heartbeat-join.log" 2>&1 || rc=$?
check_eq "heartbeat = \"0s\": join exit code" "$rc" 2
check "heartbeat = \"0s\": join names [relay] heartbeat and its range" \
	grep -qF "config $WORK/bad-heartbeat.toml: [relay] heartbeat = \"0s\": want from 10ms to half of [relay] dead_after" "$LOGS/bad-heartbeat-join.log"
check "heartbeat = \"0s\": join does not panic" bash -c "! grep -q panic '$LOGS/bad-heartbeat-join.log'"
rc=0
host_env 0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --config "$WORK/bad-heartbeat.toml" --expect 1 --wait 3s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	"$PKG_E" >"$LOGS/bad-heartbeat-seed.log" 2>&1 || rc=$?
check_eq "heartbeat = \"0s\": seed exit code" "$rc" 2
check "heartbeat = \"0s\": seed names [relay] heartbeat" grep -qF '[relay] heartbeat = "0s"' "$LOGS/bad-heartbeat-seed.log"

KEY=$WORK/keys/seed.key
mkdir -p "$(dirname "$KEY")"
check "keygen --out $KEY" "$BIN" keygen --out "$KEY"
check_eq "keygen writes the key 0600" "$(stat -c %a "$KEY")" 600
chmod 640 "$KEY"
rc=0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --key "$KEY" --expect 1 --wait 3s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	"$PKG_E" >"$LOGS/open-key-seed.log" 2>&1 || rc=$?
check_eq "group-readable key: seed exit code" "$rc" 1
check "group-readable key: seed says UNPROTECTED PRIVATE KEY FILE" grep -qF "UNPROTECTED PRIVATE KEY FILE" "$LOGS/open-key-seed.log"
check "group-readable key: seed gives the chmod that fixes it" grep -qF "chmod 600 $KEY" "$LOGS/open-key-seed.log"
check "group-readable key: seed never looks for receivers" bash -c "! grep -q 'looking for receivers' '$LOGS/open-key-seed.log'"
chmod 600 "$KEY"
rc=0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --key "$KEY" --expect 1 --wait 1s "${IFACE_ARGS[@]}" --group nobody \
	"$PKG_E" >"$LOGS/closed-key-seed.log" 2>&1 || rc=$?
check_eq "key chmod 600: seed takes it and finds nobody in group nobody (exit code)" "$rc" 3

# h9's serve agent holds $WORK/h9.
rc=0
host_env 9
lab_exec 9 "${HENV[@]}" timeout -k 10 60 "$BIN" join --name h9-again "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--timeout 5s --dir "$WORK/h9" "${TRUST_ARGS[@]}" --to "$WORK/dest/h9" >"$LOGS/dir-in-use-join.log" 2>&1 || rc=$?
check_eq "--dir in use by the serve agent: join exit code" "$rc" 1
check "--dir in use by the serve agent: join says so and points at --dir" \
	grep -qF "$WORK/h9 is in use by another treecast receiver: give this one its own --dir" "$LOGS/dir-in-use-join.log"

# ---- checked before the first byte is sent: exit 2, one line, nothing sent ----
say "checked at start: exit 2, a one-line message, and nothing sent"
# A package of its own name: were a check missed, h9's agent would get it.
PKG_P=$WORK/pkg/checked-at-start.bin
head -c 100000 /dev/urandom >"$PKG_P"
: >"$WORK/a-file"
mkdir -p "$WORK/ro"
mount -t tmpfs -o ro,size=64k tmpfs "$WORK/ro" && MOUNTS+=("$WORK/ro")
# at_start NAME HOST WANT CMD... : CMD exits 2, its output is the one line WANT is in.
at_start() {
	local name=$1 host=$2 want=$3 rc=0 log=$LOGS/at-start-${1//[^A-Za-z0-9]/-}.log
	shift 3
	host_env "$host"
	lab_exec "$host" "${HENV[@]}" timeout -k 10 60 "$BIN" "$@" >"$log" 2>&1 || rc=$?
	check_eq "at start: $name: exit code" "$rc" 2
	if grep -qF -- "$want" "$log" && (($(wc -l <"$log") == 1)); then
		pass "at start: $name: one line saying \"$want\""
	else
		fail "at start: $name: one line saying \"$want\" (got: $(head -c 300 "$log"))"
	fi
}
SEED_ARGS=(--expect 1 --wait 5s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}")
JOIN_ARGS=(--name h1 "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" --timeout 5s --dir "$WORK/h1" "${TRUST_ARGS[@]}")
at_start "seed --report in a missing folder" 0 "--report $WORK/missing/r.json: the folder $WORK/missing does not exist" \
	seed "${SEED_ARGS[@]}" --report "$WORK/missing/r.json" "$PKG_P"
at_start "seed --report a folder" 0 "--report $WORK is a directory" seed "${SEED_ARGS[@]}" --report "$WORK" "$PKG_P"
at_start "seed --key that does not exist" 0 "--key $WORK/typo.key: no such key file" seed "${SEED_ARGS[@]}" --key "$WORK/typo.key" "$PKG_P"
check "at start: seed --key that does not exist: no key made there" test ! -e "$WORK/typo.key"
at_start "seed --chunk-size 1MB" 0 '--chunk-size "1MB": want a size from 4KiB to 16MiB, a multiple of 4KiB, such as 1MiB or 256KiB (1MB is 1000000 bytes)' \
	seed "${SEED_ARGS[@]}" --chunk-size 1MB "$PKG_P"
at_start "seed --chunk-size 1.5GB" 0 "KiB, MiB, GiB (binary: 1MiB = 1048576) or KB, MB, GB (decimal: 1MB = 1000000)" \
	seed "${SEED_ARGS[@]}" --chunk-size 1.5GB "$PKG_P"
at_start "seed --wait 30" 0 'seed: --wait "30": want a duration with a unit, such as 30s, 2m or 1h30m; see treecast seed --help' \
	seed "${SEED_ARGS[@]}" --wait 30 "$PKG_P"
at_start "seed --expect over max_nodes" 0 "--expect 5000: want 0" seed "${SEED_ARGS[@]}" --expect 5000 "$PKG_P"
at_start "join --to a file" 1 "--to $WORK/a-file: $WORK/a-file is a file, not a directory" join "${JOIN_ARGS[@]}" --to "$WORK/a-file"
at_start "join --to under /proc" 1 "--to /proc/treecast: /proc is the kernel's own filesystem" join "${JOIN_ARGS[@]}" --to /proc/treecast
at_start "join --extract under /sys" 1 "--extract /sys/treecast: /sys is the kernel's own filesystem" join "${JOIN_ARGS[@]}" --extract /sys/treecast
at_start "join --to on a read-only filesystem" 1 "$WORK/ro is on a read-only filesystem" join "${JOIN_ARGS[@]}" --to "$WORK/ro/dest"
at_start "serve --to a file" 2 "serve: --to $WORK/a-file: $WORK/a-file is a file" serve --name h2 "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--dir "$WORK/h2" "${TRUST_ARGS[@]}" --to "$WORK/a-file"
at_start "an unknown command" 0 'treecast: unknown command "bogus"; see treecast --help' bogus
check "at start: nothing sent: h9 never heard of $(basename "$PKG_P")" bash -c "! grep -qF '$(basename "$PKG_P")' '$LOGS/serve-h9.log' && test ! -e '$SERVE_DEST/$(basename "$PKG_P")'"

# ---- flags after FILE; a report that cannot be written exits 4 ----
say "flags after FILE are read; a report on a full disk exits 4 after the table"
PKG_F=$WORK/pkg/flags-after.bin
head -c 200000 /dev/urandom >"$PKG_F"
rc=0
host_env 0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed "$PKG_F" --verbose --expect 1 --wait 10s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--report "$WORK/F.json" >"$LOGS/flags-after-seed.log" 2>&1 || rc=$?
check_eq "flags after FILE: seed exit code" "$rc" 0
check_eq "flags after FILE: --expect 1 read (report expected)" "$(jq -r .expected "$WORK/F.json" 2>/dev/null)" 1
check_eq "flags after FILE: report outcome" "$(jq -r .outcome "$WORK/F.json" 2>/dev/null)" ok
check "flags after FILE: --verbose after the command logs each receiver found" grep -q 'found receiver' "$LOGS/flags-after-seed.log"
check_copy F "h9 serve --to $(basename "$PKG_F")" "$PKG_F" "$SERVE_DEST/$(basename "$PKG_F")"

# ---- the same package again: up to date, nothing run; --force runs it again ----
say "the same package to the serve agent again: up to date, --exec not run; --force runs it again"
# execs NAME : how many times h9's --exec ran for package NAME.
execs() { grep -cxF "$1" "$SERVE_EXECS" 2>/dev/null || true; }
check_eq "same package: h9's --exec ran once for $(basename "$PKG_F")" "$(execs "$(basename "$PKG_F")")" 1
rm -f "$SERVE_DEST/$(basename "$PKG_F")"
rc=0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --expect 1 --wait 10s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--report "$WORK/U.json" "$PKG_F" >"$LOGS/up-to-date-seed.log" 2>&1 || rc=$?
indent <"$LOGS/up-to-date-seed.log"
check_eq "same package again: seed exit code" "$rc" 0
check "same package again: the table says h9 is ok (up to date)" grep -qE '^h9 +[0-9a-f]{8} .* ok \(up to date\) ' "$LOGS/up-to-date-seed.log"
check "same package again: the summary says 1 of 1 up to date, without a rate" \
	grep -qxE "$(basename "$PKG_F"): 1 of 1 nodes ok \(1 up to date\), 0 failed; in [0-9.]+s" "$LOGS/up-to-date-seed.log"
check_eq "same package again: report outcome, status, detail, received" \
	"$(jq -c '[.outcome, (.nodes[] | .status, .detail, .received)]' "$WORK/U.json" 2>/dev/null)" '["ok","ok","up to date",0]'
check_eq "same package again: h9's --exec did not run again" "$(execs "$(basename "$PKG_F")")" 1
check "same package again: h9 did not place it again" test ! -e "$SERVE_DEST/$(basename "$PKG_F")"
check "same package again: h9 says up to date" grep -qF "$(basename "$PKG_F"): up to date: applied here already with the same actions" "$LOGS/serve-h9.log"
rc=0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --force --expect 1 --wait 10s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--report "$WORK/U2.json" "$PKG_F" >"$LOGS/force-seed.log" 2>&1 || rc=$?
check_eq "--force: seed exit code" "$rc" 0
check_eq "--force: report status, detail, received" \
	"$(jq -c '[.nodes[] | .status, .detail, .received]' "$WORK/U2.json" 2>/dev/null)" "[\"ok\",null,$(fsize "$PKG_F")]"
check_eq "--force: h9's --exec ran again" "$(execs "$(basename "$PKG_F")")" 2
check_copy U "--force: h9 serve --to $(basename "$PKG_F") placed again" "$PKG_F" "$SERVE_DEST/$(basename "$PKG_F")"

mkdir -p "$WORK/full"
if mount -t tmpfs -o size=64k tmpfs "$WORK/full"; then
	MOUNTS+=("$WORK/full")
	head -c 1M /dev/zero >"$WORK/full/fill" 2>/dev/null || true
fi
PKG_R=$WORK/pkg/report-on-full-disk.bin
head -c 200000 /dev/urandom >"$PKG_R"
rc=0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --expect 1 --wait 10s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--report "$WORK/full/R.json" "$PKG_R" >"$LOGS/report-full-seed.log" 2>&1 || rc=$?
check_eq "report on a full disk: seed exit code" "$rc" 4
check "report on a full disk: the table is printed" grep -qE '^h9 +[0-9a-f]{8} .* ok ' "$LOGS/report-full-seed.log"
check "report on a full disk: the seed says so and what to do" \
	grep -qF "seed: --report $WORK/full/R.json: write $WORK/full/R.json.tmp: no space left on device: the outcome was not saved (the table above has it): make that path writable, or give another one" "$LOGS/report-full-seed.log"
check "report on a full disk: nothing left there" test ! -e "$WORK/full/R.json" -a ! -e "$WORK/full/R.json.tmp"
check_copy R "h9 serve --to $(basename "$PKG_R")" "$PKG_R" "$SERVE_DEST/$(basename "$PKG_R")"

# ---- the serve agent got all four, one after another ----
say "serve agent h9: four sessions in a row"
for p in "$PKG_A" "$PKG_B" "$PKG_C" "$PKG_D"; do
	check_copy serve "h9 serve --to $(basename "$p")" "$p" "$SERVE_DEST/$(basename "$p")"
done
if kill -0 "$SERVE_PID" 2>/dev/null; then
	pass "serve: h9 still running after four sessions"
	kill -TERM "$SERVE_PID"
	for _ in $(seq 1 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$SERVE_PID" 2>/dev/null; then
		fail "serve: h9 stops within 10 s of SIGTERM"
	else
		rc=0
		wait "$SERVE_PID" || rc=$?
		pass "serve: h9 stops within 10 s of SIGTERM"
		check_eq "serve: h9 exit code after SIGTERM" "$rc" 0
		check "serve: h9 logs that it stops on SIGTERM" grep -qF "treecast: serve: SIGTERM received: stopping" "$LOGS/serve-h9.log"
	fi
else
	rc=0
	wait "$SERVE_PID" || rc=$?
	fail "serve: h9 still running after four sessions (it exited with $rc; log $LOGS/serve-h9.log)"
	tail -n 15 "$LOGS/serve-h9.log" | indent
fi

# ---- Ctrl-C ----
say "Ctrl-C: while looking, and mid-transfer: exit 130, the table so far, the report; the same command again resumes"
PKG_I=$WORK/pkg/interrupted.bin
head -c $((4 * 1048576)) /dev/urandom >"$PKG_I"
# wait_for SECONDS CMD... : polls CMD until it succeeds; fails after SECONDS.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}
# interrupt PID : SIGINT to PID, then its exit code in rc.
interrupt() {
	local pid=$1
	kill -INT "$pid" || true
	for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		fail "Ctrl-C: pid $pid still runs 10 s after SIGINT"
		kill -KILL "$pid" || true
	fi
	rc=0
	wait "$pid" || rc=$?
}
# seed_rate RATE : shapes the seed's (h0's) upload to RATE; "" puts back the lab's.
seed_rate() {
	local ns rate=${1:-$RATE}
	ns=$(lab_ns 0)
	tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
	if [[ $rate != none && $rate != 0 ]]; then
		tc -n "$ns" qdisc add dev eth0 root tbf rate "$rate" burst "$(lab_burst "$rate")" latency "$LAB_LATENCY" ||
			fail "Ctrl-C: shape h0's upload to $rate"
	fi
}
host_env 0
lab_spawn 0 "$LOGS/I0-seed.log" "${HENV[@]}" "$BIN" seed --expect 1 --wait 60s "${IFACE_ARGS[@]}" --group nobody --report "$WORK/I0.json" "$PKG_I"
pid=$LAB_LAST_PID
wait_for 20 grep -q "looking for receivers" "$LOGS/I0-seed.log" || fail "Ctrl-C while looking: the seed never started looking"
interrupt "$pid"
check_eq "Ctrl-C while looking: seed exit code" "$rc" 130
check "Ctrl-C while looking: says interrupted, nothing sent, run it again" \
	grep -qF "seed: interrupted: run the same command again to resume (stopped by SIGINT; nothing was sent)" "$LOGS/I0-seed.log"
check_eq "Ctrl-C while looking: report outcome, nodes" "$(jq -c '[.outcome, (.nodes | length), .package.sha256]' "$WORK/I0.json" 2>/dev/null)" "[\"interrupted\",0,\"$(sha "$PKG_I")\"]"

host_env 4
lab_spawn 4 "$LOGS/I0-join.log" "${HENV[@]}" "$BIN" join --name h4 "${IFACE_ARGS[@]}" --group nobody --dir "$WORK/h4" "${TRUST_ARGS[@]}" --to "$WORK/dest/h4"
pid=$LAB_LAST_PID
wait_for 20 grep -q "waiting for a session" "$LOGS/I0-join.log" || fail "Ctrl-C at join: it never started waiting"
interrupt "$pid"
check_eq "Ctrl-C at join: exit code" "$rc" 130
check "Ctrl-C at join: says so, and how to resume" \
	grep -qF "join: interrupted by SIGINT: run the same command again (with the same --dir, it resumes from the blocks verified so far)" "$LOGS/I0-join.log"

for i in 1 2 3; do
	mkdir -p "$WORK/dest/h$i/I"
	start_join "$i" "$LOGS/I-h$i.log" --to "$WORK/dest/h$i/I"
done
# The seed's upload at 2 Mbit/s: 4 MiB take about 17 s.
seed_rate 2mbit
host_env 0
lab_spawn 0 "$LOGS/I-seed.log" "${HENV[@]}" "$BIN" seed --expect 3 --wait 30s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" --report "$WORK/I.json" "$PKG_I"
pid=$LAB_LAST_PID
# Mid-transfer: a receiver reports a share of the package, neither 0 nor all of it.
if wait_for 40 grep -qE 'treecast: +([1-9][0-9]?\.[0-9])%' "$LOGS/I-h1.log" "$LOGS/I-h2.log" "$LOGS/I-h3.log"; then
	pass "Ctrl-C mid-transfer: the receivers got part of the package"
else
	fail "Ctrl-C mid-transfer: the receivers got part of the package"
fi
interrupt "$pid"
seed_rate ""
echo "seed output:"
indent <"$LOGS/I-seed.log"
check_eq "Ctrl-C mid-transfer: seed exit code" "$rc" 130
check "Ctrl-C mid-transfer: the table so far" grep -qE '^NODE +ID +ADDRESS' "$LOGS/I-seed.log"
check_eq "Ctrl-C mid-transfer: a table line per receiver" "$(grep -cE '^h[123] +[0-9a-f]{8} ' "$LOGS/I-seed.log")" 3
check "Ctrl-C mid-transfer: says interrupted: run the same command again to resume" \
	grep -qF "seed: interrupted: run the same command again to resume" "$LOGS/I-seed.log"
check_eq "Ctrl-C mid-transfer: report outcome" "$(jq -r .outcome "$WORK/I.json" 2>/dev/null)" interrupted
check_eq "Ctrl-C mid-transfer: report names h1..h3" "$(jq -r '[.nodes[].name] | sort | join(",")' "$WORK/I.json" 2>/dev/null)" "h1,h2,h3"
check "Ctrl-C mid-transfer: each node's status is ok, or failed with why" \
	jq -e '[.nodes[] | .status == "ok" or (.status == "failed" and (.error | startswith("interrupted: the seed was stopped by SIGINT")))] | all' "$WORK/I.json"
# shellcheck disable=SC2016 # $s is jq's
check "Ctrl-C mid-transfer: a node was stopped part-way" jq -e --argjson s "$(fsize "$PKG_I")" '[.nodes[] | select(.status == "failed" and .bytes < $s)] | length > 0' "$WORK/I.json"
rc=0
host_env 0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --expect 3 --wait 30s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--report "$WORK/I2.json" "$PKG_I" >"$LOGS/I2-seed.log" 2>&1 || rc=$?
check_eq "Ctrl-C, then the same command again: seed exit code" "$rc" 0
wait_joins I
for i in 1 2 3; do check_copy I "h$i --to copy after the resumed run" "$PKG_I" "$WORK/dest/h$i/I/$(basename "$PKG_I")"; done
# shellcheck disable=SC2016 # $s is jq's
check "Ctrl-C, then the same command again: the receivers resumed (downloaded less than 3 whole copies)" \
	jq -e --argjson s "$(fsize "$PKG_I")" '[.nodes[].received] | add < 3 * $s' "$WORK/I2.json"

# ---- nothing to find ----
say "nobody there: join and seed give up with exit code 3"
t0=$(date +%s.%N)
rc=0
host_env 1
lab_exec 1 "${HENV[@]}" timeout -k 10 60 "$BIN" join --name h1 "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--timeout 3s --dir "$WORK/h1" "${TRUST_ARGS[@]}" --to "$WORK/dest/h1" >"$LOGS/nosession-join.log" 2>&1 || rc=$?
t1=$(date +%s.%N)
el=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
check_eq "join with no session: exit code" "$rc" 3
check "join with no session: gives up after its --timeout 3s (took ${el}s)" awk -v e="$el" 'BEGIN{exit !(e >= 2.5 && e <= 20)}'
t0=$(date +%s.%N)
rc=0
host_env 0
lab_exec 0 "${HENV[@]}" timeout -k 10 60 "$BIN" seed --expect 1 --wait 3s "${IFACE_ARGS[@]}" "${GROUP_ARGS[@]}" \
	--report "$WORK/none.json" "$PKG_D" >"$LOGS/noreceiver-seed.log" 2>&1 || rc=$?
t1=$(date +%s.%N)
el=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
check_eq "seed with no receivers: exit code" "$rc" 3
check "seed with no receivers: gives up after its --wait 3s (took ${el}s)" awk -v e="$el" 'BEGIN{exit !(e >= 2.5 && e <= 20)}'
check_eq "seed with no receivers: report written (outcome, nodes, package)" \
	"$(jq -c '[.outcome, (.nodes | length), .package.name, .expected]' "$WORK/none.json" 2>/dev/null)" "[\"no receivers\",0,\"$(basename "$PKG_D")\",1]"

# ---- nothing left behind: every command above has exited ----
left=0
for ((i = 0; i < HOSTS; i++)); do
	left=$((left + $(ip netns pids "$(lab_ns "$i")" 2>/dev/null | wc -l)))
done
check_eq "no process left running in the lab" "$left" 0

FINISHED=1
echo
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
