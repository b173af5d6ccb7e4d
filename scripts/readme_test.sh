#!/usr/bin/env bash
# readme_test.sh - the README's walkthroughs, "Shop floor: agents and an
# unattended update" and "Classroom: one-off reimaging with join", followed
# as written on the LAN lab (scripts/lab.sh).
#
# The commands are read from the ```sh blocks of those sections, so a README
# that changes breaks this test instead of going untested. Only what must
# differ on the lab is changed, each change checked to apply:
#   the fingerprint in the README     -> the one `treecast keygen` printed
#   --expect 40, --expect 25          -> the number of lab machines
#   /opt/app, /tmp/treecast           -> a scratch folder of that lab host
#   systemctl restart app             -> a command that appends the
#                                        extracted app's VERSION to a marker
#   /dev/sda                          -> a loop device (an image file where
#                                        there are none)
#   sudo bash install.sh ...          -> bash install.sh ... --root SCRATCH
# The lab's hosts share this machine's filesystem, so what is a machine's own
# comes through its environment: HOME (the seed key) and TREECAST_DIR (the
# agent's state, else /var/lib/treecast). A command is run only if every
# absolute path in it lies in the work folder.
#
# Shop floor: h0 makes the seed key; h1 and h2 run the agent command; h3 is
# the agent install.sh makes: its release folder passes `sha256sum --check`,
# install.sh installs into a scratch root, and the unit's ExecStart runs
# there (systemd itself is not: scripts/service_test.sh verifies the unit).
# Checks: the seed exits 0, every agent extracted the release and ran its
# restart command once, after extracting; line2.json says every machine ok;
# the same seed again exits 0, every line says `ok (up to date)`, and no
# restart command runs; the agents stop on SIGTERM with exit 0.
# Classroom: h4..h6 run the join command on a disk each, h0 the seed command
# with an image holding data, zeros and text, over disks full of 0xff.
# Checks: the seed and every join exit 0, every PC's line says ok, and every
# disk holds the image byte for byte.
#
# Prints PASS/FAIL per check and ends with "N passed, N failed".
# Env: README_BIN (use this binary), README_KEEP=1 (keep OUT), OUT (work dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

README=$ROOT/README.md
OUT=${OUT:-$ROOT/scripts/out/readme-$LAB_PREFIX}
WORK=$OUT/work
BIN=$OUT/bin/treecast
AGENTS=(1 2 3)  # h3: the agent install.sh sets up
PCS=(4 5 6)
LOOPS=()         # loop devices made here: the PCs' disks
AGENT_PID=()
JOIN_PID=()
PASSED=0
FAILED=0
FINISHED=
STOPPED=
# PASS and FAIL lines go to fd 3, the terminal, even from a command whose
# output goes to a log.
exec 3>&1
pass() { printf 'PASS: %s\n' "$*" >&3; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL: %s\n' "$*" >&3; FAILED=$((FAILED + 1)); }
check_eq() { if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1 (got '$2', want '$3')"; fi; }
say() { printf '\n== %s\n' "$*"; }
# stop MSG: a failure that leaves nothing sensible to run after it.
stop() {
	fail "$*"
	STOPPED=1
	exit 1
}

finish() {
	local rc=$?
	set +e
	lab_cleanup
	for l in "${LOOPS[@]}"; do losetup -d "$l"; done
	[[ -n $FINISHED$STOPPED ]] || fail "stopped before the end (exit $rc)"
	if ((FAILED == 0)) && [[ -z ${README_KEEP:-} ]]; then
		rm -rf "$OUT"
	elif [[ -d $OUT ]]; then
		echo "logs and files kept in $OUT"
	fi
	echo "$PASSED passed, $FAILED failed"
	((FAILED == 0)) || exit 1
}
trap finish EXIT
trap 'fail "interrupted"; exit 130' INT TERM

# ---- the commands, from README.md -------------------------------------------

# readme_cmds SECTION: the commands in the ```sh blocks under the heading
# "## SECTION...", one a line, with continued lines joined.
readme_cmds() {
	awk -v sec="## $1" '
		/^## / { in_sec = (index($0, sec) == 1); in_blk = 0; next }
		in_sec && /^```sh[ \t]*$/ { in_blk = 1; next }
		in_blk && /^```/ { in_blk = 0; next }
		in_blk {
			line = cont $0
			if (line ~ /\\[ \t]*$/) { sub(/\\[ \t]*$/, " ", line); cont = line; next }
			cont = ""
			if (line ~ /[^ \t]/) print line
		}' "$README"
}

# readme_cmd NAME SECTION START: sets variable NAME to the one command of
# SECTION that begins with the words START.
readme_cmd() {
	local got n
	got=$(readme_cmds "$2" | awk -v s="$3" 'index($0, s " ") == 1 || $0 == s')
	n=$(grep -c . <<<"$got" || true)
	((n == 1)) || stop "README: section \"$2\" has one command starting \"$3\" in its sh blocks, not $n: update readme_test.sh to what the README says now"
	printf -v "$1" '%s' "$got"
}

# subst NAME FROM TO: in the command held by variable NAME, FROM (a fixed
# string) becomes TO; the README must still say FROM.
subst() {
	local -n subst_cmd=$1
	[[ $subst_cmd == *"$2"* ]] || stop "README: \"$subst_cmd\" no longer has \"$2\", which the lab maps to \"$3\": update readme_test.sh"
	subst_cmd=${subst_cmd//"$2"/"$3"}
}

# subst_re NAME ERE TO: as subst, for what matches ERE (TO holds no | & \).
subst_re() {
	local -n subst_re_cmd=$1
	grep -qE -- "$2" <<<"$subst_re_cmd" || stop "README: \"$subst_re_cmd\" has nothing like /$2/, which the lab maps to \"$3\": update readme_test.sh"
	subst_re_cmd=$(sed -E "s|$2|$3|g" <<<"$subst_re_cmd")
}

# scratch_only CMD: every absolute path in CMD lies in WORK or is a loop
# device made here, so nothing else of this machine's is touched.
scratch_only() {
	local p
	while read -r p; do
		[[ -z $p || $p == "$WORK"/* || " ${LOOPS[*]} " == *" $p "* ]] ||
			stop "refusing to run \"$1\": $p is outside the work folder (a new path in the README? map it in readme_test.sh)"
	done < <(grep -oE "(^|[[:space:]'\"=])/[^[:space:]'\"]*" <<<"$1" | sed -E "s/^[[:space:]'\"=]//")
}

FP_RE='[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}'
SHOP="Shop floor"
CLASS="Classroom"
readme_cmd KEYGEN "$SHOP" "treecast keygen"
readme_cmd SUMS "$SHOP" "sha256sum"
readme_cmd INSTALL "$SHOP" "sudo bash install.sh"
readme_cmd STATUS "$SHOP" "systemctl status treecast"
readme_cmd SERVE "$SHOP" "treecast serve"
readme_cmd SEED "$SHOP" "treecast seed"
readme_cmd JOIN "$CLASS" "treecast join"
readme_cmd CSEED "$CLASS" "treecast seed"
say "the README's commands"
printf '    | %s\n' "$KEYGEN" "$SUMS" "$INSTALL" "$STATUS" "$SERVE" "$SEED" "$JOIN" "$CSEED"

# ---- the lab ----------------------------------------------------------------

rm -rf "$OUT"
mkdir -p "$WORK" "$(dirname "$BIN")"
[[ $WORK != *[[:space:]\'\"\\\|\&]* ]] || stop "the work folder $WORK must hold no spaces, quotes, | or &"
if [[ -n ${README_BIN:-} ]]; then
	cp "$README_BIN" "$BIN"
else
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .) || stop "go build"
fi
lab_up $((1 + ${#AGENTS[@]} + ${#PCS[@]})) none

# machine I: an `env -i ...` prefix with host I's own environment, as on a
# machine of its own, with treecast on its PATH.
machine() {
	local h=$WORK/h$1
	mkdir -p "$h/home" "$h/var-lib-treecast"
	printf '%s\n' env -i "PATH=$(dirname "$BIN"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		"HOME=$h/home" "TREECAST_DIR=$h/var-lib-treecast"
}
# run_in I DIR CMD: CMD in a shell on host I, in folder DIR.
run_in() {
	local env
	scratch_only "$3"
	mapfile -t env < <(machine "$1")
	lab_exec "$1" "${env[@]}" timeout -k 5 120 bash -c "cd $(printf %q "$2") && $3"
}
# seed_h0 WHAT LOG N CMD: runs the seed command CMD on h0, shows its table of
# N nodes and the summary, and checks that it exits 0.
seed_h0() {
	local what=$1 log=$2 n=$3 cmd=$4 rc=0
	run_in 0 "$WORK/h0" "$cmd" >"$log" 2>&1 || rc=$?
	tail -n $((n + 3)) "$log" | sed 's/^/    | /'
	check_eq "$what: exit code" "$rc" 0
}
# spawn_in I LOG CMD: CMD in a shell on host I, in the background, its pid
# (CMD's own: the shell execs it) in LAB_LAST_PID.
spawn_in() {
	local env
	scratch_only "$3"
	mapfile -t env < <(machine "$1")
	lab_spawn "$1" "$2" "${env[@]}" bash -c "exec $3"
}
# wait_exit PID SECONDS: PID's exit code in rc; 124 if it still ran after
# SECONDS (it is then stopped).
wait_exit() {
	local pid=$1 deadline=$((SECONDS + $2))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
	rc=0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		rc=124
		return
	fi
	wait "$pid" || rc=$?
}

# ---- shop floor -------------------------------------------------------------

say "shop floor: keygen on the seed's machine (h0)"
mkdir -p "$WORK/h0"
rc=0
run_in 0 "$WORK/h0" "$KEYGEN" >"$WORK/keygen.log" 2>&1 || rc=$?
sed 's/^/    | /' "$WORK/keygen.log"
((rc == 0)) || stop "keygen: exit $rc"
FP=$(sed -nE "s/^fingerprint ($FP_RE)\$/\\1/p" "$WORK/keygen.log")
[[ -n $FP ]] || stop "keygen prints the fingerprint (a line 'fingerprint xxxx-xxxx-xxxx-xxxx')"
pass "keygen printed the fingerprint $FP"

# restart_cmd I: what `systemctl restart app` becomes on host I: it records
# the VERSION of the app it would restart, as extracted by then.
restart_cmd() { printf 'cat %s/h%s/opt/app/app-2.4/VERSION >> %s/h%s/restarted' "$WORK" "$1" "$WORK" "$1"; }

for i in 1 2; do
	cmd=$SERVE
	subst_re cmd "$FP_RE" "$FP"
	subst cmd /opt/app "$WORK/h$i/opt/app"
	subst cmd "systemctl restart app" "$(restart_cmd "$i")"
	spawn_in "$i" "$WORK/h$i/agent.log" "$cmd"
	AGENT_PID[i]=$LAB_LAST_PID
done
echo "h1, h2: $cmd (h2's)"

say "shop floor: h3's agent as install.sh makes it"
arch=$(uname -m)
case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; armv7*) arch=armv7 ;; esac
REL=$WORK/h3/release
mkdir -p "$REL"
cp "$BIN" "$REL/treecast-linux-$arch"
cp "$ROOT/scripts/install.sh" "$REL/install.sh"
# As a release's: it lists the other targets too, which are not copied.
(cd "$REL" && sha256sum "treecast-linux-$arch" install.sh >SHA256SUMS &&
	echo "$(printf '0%.0s' {1..64})  treecast-windows-amd64.exe" >>SHA256SUMS)
rc=0
run_in 3 "$REL" "$SUMS" >"$WORK/h3/sums.log" 2>&1 || rc=$?
check_eq "$SUMS: exit code ($(tr '\n' ' ' <"$WORK/h3/sums.log"))" "$rc" 0
R=$WORK/h3/root
cmd=$INSTALL
subst cmd "sudo bash install.sh" "bash install.sh --root $R"
subst_re cmd "$FP_RE" "$FP"
subst cmd /opt/app "$WORK/h3/opt/app"
subst cmd "systemctl restart app" "$(restart_cmd 3)"
echo "$cmd"
rc=0
run_in 3 "$REL" "$cmd" >"$WORK/h3/install.log" 2>&1 || rc=$?
sed 's/^/    | /' "$WORK/h3/install.log"
check_eq "install.sh (into a scratch root): exit code" "$rc" 0
UNIT=$R/etc/systemd/system/treecast.service
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT" 2>/dev/null || true)
[[ -n $exec_start ]] || stop "install.sh wrote a unit with an ExecStart ($UNIT)"
echo "'$STATUS' needs systemd as PID 1, which the lab has not: h3 runs the unit's ExecStart=$exec_start"
cmd=$(sed -E "s#(^|[[:space:]])/#\\1$R/#g" <<<"$exec_start")
spawn_in 3 "$WORK/h3/agent.log" "$cmd"
AGENT_PID[3]=$LAB_LAST_PID

say "shop floor: the release, seeded from h0"
SRC=$WORK/src
mkdir -p "$SRC/app-2.4/bin" "$SRC/app-2.4/lib"
echo 2.4 >"$SRC/app-2.4/VERSION"
printf '#!/bin/sh\necho app 2.4\n' >"$SRC/app-2.4/bin/app"
chmod 755 "$SRC/app-2.4/bin/app"
head -c $((2 * 1048576 + 99)) /dev/urandom >"$SRC/app-2.4/lib/data.bin"
tar -C "$SRC" -czf "$WORK/h0/app-2.4.tar.gz" app-2.4
cmd=$SEED
subst_re cmd "--expect [0-9]+" "--expect ${#AGENTS[@]}"
echo "$cmd"
seed_h0 seed "$WORK/seed1.log" ${#AGENTS[@]} "$cmd"
for i in "${AGENTS[@]}"; do
	if diff -r "$SRC/app-2.4" "$WORK/h$i/opt/app/app-2.4" >/dev/null 2>&1 && [[ -x $WORK/h$i/opt/app/app-2.4/bin/app ]]; then
		pass "h$i: the release is extracted in its /opt/app"
	else
		fail "h$i: the release is extracted in its /opt/app (log: $WORK/h$i/agent.log)"
	fi
	check_eq "h$i: the restart command ran once, with the new release in place" "$(cat "$WORK/h$i/restarted" 2>/dev/null)" 2.4
	if grep -qE "^h$i +[0-9a-f]{8} .* ok +[0-9]+ " "$WORK/seed1.log"; then pass "h$i: its line says ok"; else fail "h$i: its line says ok"; fi
done
J=$WORK/h0/line2.json
check_eq "line2.json: outcome, expected" "$(jq -c '[.outcome, .expected]' "$J" 2>/dev/null)" "[\"ok\",${#AGENTS[@]}]"
check_eq "line2.json: every machine ok" "$(jq -r '[.nodes[] | "\(.name) \(.status)"] | sort | join(", ")' "$J" 2>/dev/null)" "h1 ok, h2 ok, h3 ok"
cp "$J" "$WORK/line2-first.json" 2>/dev/null || true

say "shop floor: the same release again"
seed_h0 "seed again" "$WORK/seed2.log" ${#AGENTS[@]} "$cmd"
for i in "${AGENTS[@]}"; do
	if grep -qE "^h$i +[0-9a-f]{8} .* ok \(up to date\) " "$WORK/seed2.log"; then pass "h$i: its line says ok (up to date)"; else fail "h$i: its line says ok (up to date)"; fi
	check_eq "h$i: no restart ran again" "$(cat "$WORK/h$i/restarted" 2>/dev/null)" 2.4
done
check_eq "line2.json: every machine up to date, nothing received" \
	"$(jq -c '[.outcome, ([.nodes[] | [.status, .detail, .received]] | unique)]' "$J" 2>/dev/null)" '["ok",[["ok","up to date",0]]]'

# ---- classroom ----------------------------------------------------------------

say "classroom: an image to ${#PCS[@]} PCs' disks"
IMG=$WORK/h0/classroom.img
{
	head -c $((4 * 1048576)) /dev/urandom
	head -c $((4 * 1048576)) /dev/zero
	head -c $((4 * 1048576 - 4096)) < <(yes "treecast classroom image")
} >"$IMG"
S=$(stat -c %s "$IMG")
declare -A DISK
for i in "${PCS[@]}"; do
	mkdir -p "$WORK/h$i"
	b=$WORK/h$i/disk-backing.img
	head -c $((S + 1048576)) /dev/zero | tr '\0' '\377' >"$b"
	DISK[$i]=$b
	if l=$(losetup -f --show "$b" 2>/dev/null); then
		LOOPS+=("$l")
		DISK[$i]=$l
	fi
done
echo "disks: ${DISK[*]}"
for i in "${PCS[@]}"; do
	cmd=$JOIN
	subst_re cmd "$FP_RE" "$FP"
	subst cmd /tmp/treecast "$WORK/h$i/tmp/treecast"
	subst cmd /dev/sda "${DISK[$i]}"
	spawn_in "$i" "$WORK/h$i/join.log" "$cmd"
	JOIN_PID[i]=$LAB_LAST_PID
done
echo "h${PCS[-1]}: $cmd"
cmd=$CSEED
subst_re cmd "--expect [0-9]+" "--expect ${#PCS[@]}"
echo "h0: $cmd"
seed_h0 "classroom seed" "$WORK/classroom-seed.log" ${#PCS[@]} "$cmd"
for i in "${PCS[@]}"; do
	wait_exit "${JOIN_PID[i]}" 30
	check_eq "h$i: join exit code" "$rc" 0
	if grep -qE "^h$i +[0-9a-f]{8} .* ok +[0-9]+ " "$WORK/classroom-seed.log"; then pass "h$i: its line says ok"; else fail "h$i: its line says ok"; fi
	if cmp -s -n "$S" "$IMG" "${DISK[$i]}"; then
		pass "h$i: ${DISK[$i]} holds the image byte for byte"
	else
		fail "h$i: ${DISK[$i]} holds the image byte for byte (log: $WORK/h$i/join.log)"
	fi
done

say "the agents stop on SIGTERM"
for i in "${AGENTS[@]}"; do
	kill -TERM "${AGENT_PID[i]}" 2>/dev/null || true
	wait_exit "${AGENT_PID[i]}" 10
	check_eq "h$i: agent exit code after SIGTERM" "$rc" 0
done
FINISHED=1
