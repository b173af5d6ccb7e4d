#!/usr/bin/env bash
# image.sh - reimaging a classroom: a 512 MiB ext4 image holding ~100 MB of
# real files (from /usr), sent by 1 seed to 7 `join --write TARGET`
# receivers: 4 write image files, 3 write loop devices (where the machine
# has them; files otherwise). Blocks go to their place as they arrive,
# empty ones are not sent, and what compresses travels compressed.
#
# Checks: every TARGET's sha256 equals the image's; the report says every
# target was flushed; all links together carry at most 0.3 x the image per
# receiver; every --dir under 1 MiB; every receiver's memory at most 64 MiB.
# Printed as figures (timing moves with the machine's load): makespan, seed
# start to the last join's exit, as a multiple of S/B (goal 0.35).
# Then the seed killed halfway and started again: every target ends with the
# image, and the links carry about what one uninterrupted session does. Prints the figures and PASS/FAIL per check;
# ends with "N passed, N failed". Then the same files as a tar through
# `join --exec 'tar x -C DIR' --stdin`: every DIR identical to the files;
# the figure: makespan ÷ S/B (S the tar's size; goal below 1, as the tar
# travels compressed).
# Env: IMAGE_RATE (100mbit), IMAGE_SRC (/usr/lib/x86_64-linux-gnu, whose
# first ~100 MB go in), IMAGE_BIN, IMAGE_KEEP=1, OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

RATE=${IMAGE_RATE:-100mbit}
SRC=${IMAGE_SRC:-/usr/lib/x86_64-linux-gnu}
OUT=${OUT:-$ROOT/scripts/out/image-$LAB_PREFIX}
BIN=$OUT/treecast
N=7
LOOPS=()
PASSED=0
FAILED=0
pass() { printf 'PASS: %s\n' "$*"; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; FAILED=$((FAILED + 1)); }

finish() {
	set +e
	lab_cleanup
	for l in "${LOOPS[@]}"; do losetup -d "$l"; done
	((FAILED == 0)) && [[ -z ${IMAGE_KEEP:-} ]] && rm -rf "$OUT"
	echo "$PASSED passed, $FAILED failed"
	((FAILED == 0)) || exit 1
}
trap finish EXIT
trap 'fail "interrupted"; exit 130' INT TERM

command -v mkfs.ext4 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs >/dev/null; }
mkdir -p "$OUT"
if [[ -n ${IMAGE_BIN:-} ]]; then cp "$IMAGE_BIN" "$BIN"; else (cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .) || { fail "go build"; exit 1; }; fi

# The image: ~100 MB of real files in a 512 MiB ext4 filesystem.
mkdir -p "$OUT/files"
(cd "$SRC" && find . -type f -size -20M -print0 | head -z -n 4000 | tar --null -T - -cf - 2>/dev/null) |
	(cd "$OUT/files" && tar -xf - && find . -type f -print0 | xargs -0 du -b | sort -n | awk '{ s += $1; if (s > 100000000) print $2 }' | xargs -r rm -f)
IMG=$OUT/classroom.img
truncate -s 512M "$IMG"
mkfs.ext4 -q -F -d "$OUT/files" "$IMG"
S=$(stat -c %s "$IMG")
files=$(du -sb "$OUT/files" | cut -f1)
SUM=$(sha256sum "$IMG" | cut -d' ' -f1)
echo "image: $S bytes, ext4 holding $files bytes of files from $SRC"

lab_up $((N + 1)) "$RATE"
targets=()
for ((i = 1; i <= N; i++)); do
	t=$OUT/h$i/disk.img
	mkdir -p "$OUT/h$i"
	if ((i > 4)); then
		truncate -s 512M "$OUT/h$i/backing.img"
		if l=$(losetup -f --show "$OUT/h$i/backing.img" 2>/dev/null); then
			LOOPS+=("$l")
			t=$l
		fi
	fi
	targets+=("$t")
done
echo "targets: ${targets[*]}"

tx_all() {
	local i s=0
	for ((i = 0; i <= N; i++)); do s=$((s + $(lab_exec "$i" cat /sys/class/net/eth0/statistics/tx_bytes))); done
	echo "$s"
}
pids=()
for ((i = 1; i <= N; i++)); do
	mkdir -p "$OUT/h$i/home"
	lab_spawn "$i" "$OUT/join-h$i.log" env HOME="$OUT/h$i/home" /usr/bin/time -f %M -o "$OUT/h$i/rss" timeout -k 5 300 "$BIN" join --name "h$i" \
		--iface eth0 --group image --trust-any --timeout 120s --dir "$OUT/h$i/state" --write "${targets[i - 1]}"
	pids+=("$LAB_LAST_PID")
done
for ((i = 1; i <= N; i++)); do
	for _ in $(seq 1 100); do [[ -n $(lab_exec "$i" ss -Hltn 2>/dev/null) ]] && break; sleep 0.05; done
done
mkdir -p "$OUT/h0/home"
tx0=$(tx_all)
t0=$(date +%s.%N)
rc=0
lab_spawn 0 "$OUT/seed.log" env HOME="$OUT/h0/home" timeout -k 5 300 "$BIN" seed --expect "$N" --wait 30s --iface eth0 \
	--group image --report "$OUT/report.json" "$IMG"
spid=$LAB_LAST_PID
jf=0
for p in "${pids[@]}"; do wait "$p" || jf=$((jf + 1)); done
t1=$(date +%s.%N)
wait "$spid" || rc=$?
tx1=$(tx_all)
tail -n $((N + 3)) "$OUT/seed.log" | sed 's/^/    | /'

((rc == 0 && jf == 0)) && pass "seed and every join exit 0" || fail "seed exit $rc, $jf joins failed (logs in $OUT)"
same=0
for t in "${targets[@]}"; do [[ $(head -c "$S" "$t" | sha256sum | cut -d' ' -f1) == "$SUM" ]] && same=$((same + 1)); done
[[ $same == "$N" ]] && pass "$N targets hold the image (sha256 ${SUM:0:16}), ${#LOOPS[@]} of them loop devices" || fail "$same of $N targets hold the image"
flushed=$(jq '[.nodes[] | select(.flushed == true)] | length' "$OUT/report.json" 2>/dev/null || echo 0)
[[ $flushed == "$N" ]] && pass "the report says all $N targets were flushed" || fail "$flushed of $N reported flushed"
wire=$(awk -v a="$tx0" -v b="$tx1" -v s="$S" -v n="$N" 'BEGIN { printf "%.3f", (b - a) / s / n }')
awk -v w="$wire" 'BEGIN { exit !(w <= 0.3) }' && pass "the links carried $wire x the image per receiver (<= 0.3)" || fail "the links carried $wire x the image per receiver, want <= 0.3"
bits=$(awk -v r="$RATE" 'BEGIN { n = r + 0; u = substr(r, length(n "") + 1); m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : 1; print n * m }')
ratio=$(awk -v a="$t0" -v b="$t1" -v s="$S" -v bits="$bits" 'BEGIN { printf "%.3f", (b - a) / (s * 8 / bits) }')
echo "figure: makespan $ratio x S/B (goal <= 0.35; a figure, not a check: a busy machine moves it)"
big=0
for ((i = 1; i <= N; i++)); do (($(du -sb "$OUT/h$i/state" | cut -f1) < 1048576)) || big=$((big + 1)); done
[[ $big == 0 ]] && pass "every --dir under 1 MiB" || fail "$big --dir over 1 MiB"
rss=$(for ((i = 1; i <= N; i++)); do tail -n 1 "$OUT/h$i/rss"; done | sort -n | tail -n 1)
((rss <= 65536)) && pass "the largest receiver's memory: $((rss / 1024)) MiB (<= 64 MiB)" || fail "a receiver used $((rss / 1024)) MiB, want <= 64"
wire1=$wire

# The seed killed halfway and started again: every target resumes from what
# it holds, and the links carry about what one uninterrupted session does.
for ((i = 1; i <= N; i++)); do
	t=${targets[i - 1]}
	if [[ $t == /dev/* ]]; then dd if=/dev/zero of="$t" bs=4M count=8 conv=fsync status=none; else rm -f "$t"; fi
done
pids=()
for ((i = 1; i <= N; i++)); do
	lab_spawn "$i" "$OUT/resume-h$i.log" env HOME="$OUT/h$i/home" timeout -k 5 300 "$BIN" join --name "h$i" \
		--iface eth0 --group image --trust-any --timeout 120s --dir "$OUT/h$i/state" --write "${targets[i - 1]}"
	pids+=("$LAB_LAST_PID")
done
for ((i = 1; i <= N; i++)); do
	for _ in $(seq 1 100); do [[ -n $(lab_exec "$i" ss -Hltn 2>/dev/null) ]] && break; sleep 0.05; done
done
tx0=$(tx_all)
lab_spawn 0 "$OUT/resume-seed1.log" env HOME="$OUT/h0/home" "$BIN" seed --expect "$N" --wait 30s --iface eth0 --group image "$IMG"
spid=$LAB_LAST_PID
half=$(awk -v s="$S" -v bits="$bits" -v w="$wire1" 'BEGIN { printf "%.2f", 0.5 * w * s * 8 / bits + 1 }')
sleep "$half"
kill -9 "$spid" 2>/dev/null || true
wait "$spid" 2>/dev/null || true
lab_exec 0 env HOME="$OUT/h0/home" timeout -k 5 300 "$BIN" seed --expect "$N" --wait 30s --iface eth0 --group image \
	--report "$OUT/resume.json" "$IMG" >"$OUT/resume-seed2.log" 2>&1 || rc=$?
jf=0
for p in "${pids[@]}"; do wait "$p" || jf=$((jf + 1)); done
tx1=$(tx_all)
same=0
for t in "${targets[@]}"; do [[ $(head -c "$S" "$t" | sha256sum | cut -d' ' -f1) == "$SUM" ]] && same=$((same + 1)); done
resumed=$(jq '[.nodes[] | select(.received < .bytes)] | length' "$OUT/resume.json" 2>/dev/null || echo 0)
[[ $same == "$N" && $jf == 0 ]] && pass "resume: the seed killed after ${half}s and run again; $N targets hold the image, $resumed nodes resumed" ||
	fail "resume: $same of $N targets hold the image, $jf joins failed"
wire2=$(awk -v a="$tx0" -v b="$tx1" -v s="$S" -v n="$N" 'BEGIN { printf "%.3f", (b - a) / s / n }')
awk -v a="$wire2" -v b="$wire1" 'BEGIN { exit !(a <= 1.25 * b + 0.01) }' && pass "resume: the links carried $wire2 x the image per receiver, against $wire1 uninterrupted" ||
	fail "resume: the links carried $wire2 x the image per receiver, against $wire1 uninterrupted: blocks moved twice"

# The same files as a tar, unpacked by `tar x` on each receiver from its
# stdin while the transfer runs.
TAR=$OUT/files.tar
(cd "$OUT/files" && tar -cf "$TAR" .)
T=$(stat -c %s "$TAR")
pids=()
for ((i = 1; i <= N; i++)); do
	lab_spawn "$i" "$OUT/tar-h$i.log" env HOME="$OUT/h$i/home" timeout -k 5 300 "$BIN" join --name "h$i" \
		--iface eth0 --group image --trust-any --timeout 120s --dir "$OUT/h$i/state" \
		--exec "mkdir -p $OUT/h$i/x && tar -x -C $OUT/h$i/x" --stdin
	pids+=("$LAB_LAST_PID")
done
for ((i = 1; i <= N; i++)); do
	for _ in $(seq 1 100); do [[ -n $(lab_exec "$i" ss -Hltn 2>/dev/null) ]] && break; sleep 0.05; done
done
t0=$(date +%s.%N)
rc=0
lab_spawn 0 "$OUT/tar-seed.log" env HOME="$OUT/h0/home" timeout -k 5 300 "$BIN" seed --expect "$N" --wait 30s --iface eth0 \
	--group image "$TAR"
spid=$LAB_LAST_PID
jf=0
for p in "${pids[@]}"; do wait "$p" || jf=$((jf + 1)); done
t1=$(date +%s.%N)
wait "$spid" || rc=$?
((rc == 0 && jf == 0)) && pass "tar --stdin: seed and every join exit 0" || fail "tar --stdin: seed exit $rc, $jf joins failed"
same=0
for ((i = 1; i <= N; i++)); do diff -r -q "$OUT/files" "$OUT/h$i/x" >/dev/null 2>&1 && same=$((same + 1)); done
[[ $same == "$N" ]] && pass "tar --stdin: $N unpacked trees identical to the source" || fail "tar --stdin: $same of $N trees identical"
ratio=$(awk -v a="$t0" -v b="$t1" -v s="$T" -v bits="$bits" 'BEGIN { printf "%.3f", (b - a) / (s * 8 / bits) }')
echo "figure: tar --stdin: makespan $ratio x S/B (goal < 1, as the tar travels compressed; S = $T bytes)"
