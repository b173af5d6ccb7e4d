#!/usr/bin/env bash
# bench.sh - treecast side by side with the tools users compare it with
# (FIELD.md), on the same emulated LAN: how long each takes to put S bytes on
# N machines, how much the seed uploads, and how much CPU it burns.
#
# A point is N receivers + 1 seed, link rate B, package size S. For each point
# one lab of N+1 hosts (scripts/lab.sh), every link full-duplex at B, and on
# it, one after the other:
#   treecast   treecast's defaults: N `treecast join --to` on h1..hN, then
#              `treecast seed --expect N --report R.json FILE` on h0
#   treecast1  the same with one binary tree (`[relay] trees = 1`, --config)
#   base       (only when BENCH_TOOLS names it) the defaults, run by the
#              binary BENCH_BASE: another build, side by side in one lab
#   treecast97 (only when BENCH_TOOLS names it) the defaults, and the seed
#              told the link as udpcast is: `--max-rate` 97% of B. The
#              defaults read the same from the link, so the two should match
#   udpcast    multicast, Debian's udpcast package:
#                h1..hN: udp-receiver --interface eth0 --file OUT --nokbd --exit-wait 100
#                h0:     udp-sender --interface eth0 --file PKG --nokbd --min-receivers N
#                          --full-duplex --max-bitrate B --rexmit-hello-interval 100
#   chain      a pipelined TCP chain (Kascade-like) of socat and tee, started
#              from hN back to h1, each waiting until the next one listens:
#                hN:     socat -u TCP4-LISTEN:9100,reuseaddr OPEN:OUT,creat,trunc
#                hI:     socat -u TCP4-LISTEN:9100,reuseaddr STDOUT | tee OUT |
#                          socat -u STDIN TCP4:h(I+1):9100
#                h0:     socat -u OPEN:PKG,rdonly TCP4:h1:9100
# Every tool starts with its receivers up and listening. The makespan runs from
# the start of h0's command (seed, sender, first socat) to the exit of the last
# process of the run, so treecast's includes its mDNS discovery.
#
# udpcast flags, chosen for its best honest result on this lab (measured at 8
# and 32 receivers, 20 and 100 Mbit/s):
#   --max-bitrate B   without it the sender overruns h0's shaped uplink: the
#                     tbf queue drops datagrams, ~10% of the package is sent
#                     again, and it is no faster. At B exactly: no re-sends and
#                     the best time (95% of B is ~4% slower; 105% re-sends).
#   --full-duplex     the lab's links are full duplex; the default half-duplex
#                     mode waits for ACKs before sending on (~7% slower).
#   --rexmit-hello-interval 100
#                     without it the sender checks --min-receivers only every
#                     2 s, so it starts ~2 s after every receiver has connected.
#   --exit-wait 100   a receiver lingers this long after the last slice in case
#                     its final ACK is lost (default 500 ms); 100 ms is ample
#                     on a LAN and saves 0.4 s of makespan.
#   (--rcvbuf on the receivers removes the few re-sends at 100 Mbit/s but not
#   the time: there the 2 cores, not the links, are the limit, and udpcast's
#   ratio at 16 x 100mbit ranged 1.45-1.80 over six runs.)
#
# Printed per tool and point, and at the end as one table:
#   makespan/(S/B)  S/B is the floor: every receiver downloads S at rate B
#   seed-up/S       h0's eth0 tx_bytes during the run / S (a veth counts 64 KiB
#                   TCP GSO packets, so TCP headers add <1%; udpcast's ~4%)
#   CPU-s           user+sys seconds of every process of the tool on every host:
#                   GNU time around each command, which counts the children it
#                   waits for (chain: both socats and tee). Kernel work that a
#                   softirq does for the lab's links may land on any process.
#   identical       receivers whose copy is byte-identical to the package (cmp)
# Each run's line also says how busy the whole machine was (anything else
# running included): near 100% means the CPU, not the links, was the limit.
#
# Env:
#   BENCH_POINTS  "N:RATE:MB ..." (default "16:20mbit:20 32:20mbit:20
#                 64:10mbit:10 16:100mbit:50"; --full adds 128:4mbit:4 to them);
#                 MB is 10^6 bytes of /dev/urandom, or nKB 10^3 bytes. E.g.
#                 "8:100mbit:50", "15:100mbit:1KB".
#   BENCH_TOOLS   which tools, in order (default "treecast treecast1 udpcast chain"; base and
#                 treecast97 too on request; a tool named twice runs twice)
#   BENCH_BASE    the treecast binary the tool "base" runs
#   BENCH_KIND    what the package is: random (default: MB of /dev/urandom);
#                 image (an ext4 image of MB holding MB/5 of files from /usr,
#                 receivers `join --write TARGET`); tar (a tar of MB of those
#                 files, receivers `join --exec 'tar x -C DIR' --stdin`).
#                 udpcast and the chain move the same file as it is. Also
#                 printed: wire/S, what every host sent ÷ S ÷ N.
#   BENCH_CHUNK   treecast seed --chunk-size (default: treecast's)
#   BENCH_LIMIT   seconds a run may take (default 10 x S/B + 60)
#   BENCH_RING=1  also run lab.sh's ring check on each lab (what the lab carries)
#   BENCH_SLOW    "I:RATE[:down|up|both]": host I's link is RATE that way (default
#                 down: what it receives) for every tool, e.g. "1:18mbit" for a
#                 receiver whose link something else takes a tenth of. h1 is
#                 where treecast roots its first tree, and the chain's first hop.
#   BENCH_BIN     use this treecast binary instead of building one
#   BENCH_KEEP=1  keep $OUT (kept anyway when a run broke)
#   OUT           work directory (default scripts/out/bench-$LAB_PREFIX)
#   LAB_*         shape every lab as scripts/lab.sh says, e.g. LAB_LOSS=1%
# Each run is bounded (BENCH_LIMIT); one that hits the bound shows "timeout".
# Timing never fails the script; a run that breaks (a tool exits non-zero, a
# copy differs) makes it exit 1 after the table. Missing packages (udpcast,
# socat, time, jq) are installed with apt-get.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lab.sh
source "$ROOT/scripts/lab.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	echo "usage: scripts/bench.sh [--full]"
}

POINTS=${BENCH_POINTS:-16:20mbit:20 32:20mbit:20 64:10mbit:10 16:100mbit:50}
while (($#)); do
	case $1 in
	--full) POINTS+=" 128:4mbit:4"; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench: unknown argument '$1'; usage: scripts/bench.sh [--full] (--help says more)" >&2; exit 2 ;;
	esac
done
TOOLS=${BENCH_TOOLS:-treecast treecast1 udpcast chain}
KIND=${BENCH_KIND:-random}
case $KIND in
random | image | tar) ;;
*) echo "bench: unknown BENCH_KIND '$KIND' (known: random image tar)" >&2; exit 2 ;;
esac
OUT=${OUT:-$ROOT/scripts/out/bench-$LAB_PREFIX}
BIN=$OUT/treecast
CHAIN_PORT=9100
CHUNK_ARGS=()
[[ -n ${BENCH_CHUNK:-} ]] && CHUNK_ARGS=(--chunk-size "$BENCH_CHUNK")

for t in $TOOLS; do
	case $t in
	treecast | treecast1 | treecast97 | udpcast | chain) ;;
	base) [[ -x ${BENCH_BASE:-} ]] || { echo "bench: the tool base runs BENCH_BASE, which is not an executable: '${BENCH_BASE:-}'" >&2; exit 2; } ;;
	*) echo "bench: unknown tool '$t' in BENCH_TOOLS (known: treecast treecast1 base treecast97 udpcast chain)" >&2; exit 2 ;;
	esac
done
for p in $POINTS; do
	if [[ ! $p =~ ^[0-9]+:[0-9]+(bit|kbit|mbit|gbit):[0-9]+(KB)?$ ]]; then
		echo "bench: bad point '$p' in BENCH_POINTS: want N:RATE:MB, e.g. 16:20mbit:20 (or N:RATE:nKB, e.g. 15:100mbit:1KB)" >&2
		exit 2
	fi
done
SLOW_HOST= SLOW_RATE= SLOW_WAY=
if [[ -n ${BENCH_SLOW:-} ]]; then
	if [[ ! $BENCH_SLOW =~ ^([0-9]+):([0-9]+(bit|kbit|mbit|gbit))(:(down|up|both))?$ ]]; then
		echo "bench: bad BENCH_SLOW '$BENCH_SLOW': want I:RATE[:down|up|both], e.g. 1:18mbit" >&2
		exit 2
	fi
	SLOW_HOST=${BASH_REMATCH[1]} SLOW_RATE=${BASH_REMATCH[2]} SLOW_WAY=${BASH_REMATCH[5]:-down}
	((SLOW_HOST >= 1)) || { echo "bench: BENCH_SLOW names host 0, the seed; a receiver is 1..N" >&2; exit 2; }
fi
[[ $EUID -eq 0 ]] || { echo "bench: needs root (network namespaces)" >&2; exit 2; }

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
tx0_bytes() { lab_exec 0 cat /sys/class/net/eth0/statistics/tx_bytes; }
# tx_all: bytes every host of the point sent, for the wire column
tx_all() {
	local i s=0
	for ((i = 0; i <= N; i++)); do s=$((s + $(lab_exec "$i" cat /sys/class/net/eth0/statistics/tx_bytes))); done
	echo "$s"
}
cpu_sample() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
cpu_busy() { # cpu_busy "BEFORE" "AFTER" -> percent of the whole machine
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); u = y[1]-x[1]; i = y[2]-x[2]; printf "%.0f", (u+i) ? 100*u/(u+i) : 0 }'
}

# ---- what the tools need -----------------------------------------------------
need_pkgs() {
	local missing=() t
	command -v jq >/dev/null || missing+=(jq)
	command -v ss >/dev/null || missing+=(iproute2)
	[[ -x /usr/bin/time ]] || missing+=(time)
	for t in $TOOLS; do
		case $t in
		udpcast) command -v udp-sender >/dev/null && command -v udp-receiver >/dev/null || missing+=(udpcast) ;;
		chain) command -v socat >/dev/null || missing+=(socat) ;;
		esac
	done
	((${#missing[@]})) || return 0
	echo "bench: installing ${missing[*]}"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}
need_pkgs

mkdir -p "$OUT"
if [[ " $TOOLS " == *" treecast"* ]]; then
	if [[ -n ${BENCH_BIN:-} ]]; then
		cp "$BENCH_BIN" "$BIN" || die "cannot copy BENCH_BIN '$BENCH_BIN'"
	else
		echo "bench: building treecast"
		(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .) || die "go build failed"
	fi
fi
if [[ " $TOOLS " == *" base "* ]]; then
	cp "$BENCH_BASE" "$OUT/base" || die "cannot copy BENCH_BASE '$BENCH_BASE'"
fi

# ---- one run -----------------------------------------------------------------
# Per point: N, RATE, BITS, MB, S, SB (S/B seconds), LIMIT (seconds a run may
# take), PKG, WORK. Per run, the run_* functions set:
#   R_STATUS  ok | timeout | failed     R_WHY   why, when not ok
#   R_MK      makespan in seconds       R_UP    seed upload / S
#   R_SAME    identical copies          R_NOTE  tool-specific detail

# spawn_timed I TAG LOG CMD... : lab_spawn CMD on host I, bounded by LIMIT,
# its CPU time (children included) written to $WORK/cpu/TAG.
spawn_timed() {
	local i=$1 tag=$2 log=$3
	shift 3
	lab_spawn "$i" "$log" /usr/bin/time -f '%U %S' -o "$WORK/cpu/$tag" timeout -k 10 "$LIMIT" "$@"
}

# cpu_sum -> user+sys seconds over every $WORK/cpu file (time's last line;
# a line before it says when the command failed)
cpu_sum() {
	local f
	for f in "$WORK"/cpu/*; do [[ -e $f ]] && tail -n 1 "$f"; done |
		awk '$1 ~ /^[0-9.]+$/ && $2 ~ /^[0-9.]+$/ { s += $1 + $2 } END { printf "%.1f", s }'
}

# wait_all PID... : waits for each; counts exits by kind in W_TIMEOUT and
# W_FAIL (124/137: `timeout` stopped it).
wait_all() {
	local p rc
	W_TIMEOUT=0 W_FAIL=0
	for p in "$@"; do
		rc=0
		wait "$p" || rc=$?
		case $rc in
		0) ;;
		124 | 137) W_TIMEOUT=$((W_TIMEOUT + 1)) ;;
		*) W_FAIL=$((W_FAIL + 1)) ;;
		esac
	done
}

# wait_listen I PROTO PORT PID : until host I has a PROTO (t|u) socket bound
# to PORT (PORT empty: any), at most ~5 s; gives up at once if PID has exited.
wait_listen() {
	local i=$1 proto=$2 port=$3 pid=$4 filter=()
	[[ -n $port ]] && filter=("sport = :$port")
	for _ in $(seq 1 100); do
		[[ -n $(lab_exec "$i" ss -Hl"$proto"n "${filter[@]}" 2>/dev/null) ]] && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# count_same DIRFMT : copies identical to PKG among hosts 1..N; DIRFMT is a
# printf pattern with %d for the host index
count_same() {
	local i same=0 f
	for ((i = 1; i <= N; i++)); do
		# shellcheck disable=SC2059 # the pattern is ours
		f=$(printf "$1" "$i")
		cmp -s "$PKG" "$f" && same=$((same + 1))
	done
	echo "$same"
}

# count_same_tree DIRFMT : unpacked trees identical to the files the tar holds
count_same_tree() {
	local i same=0 f
	for ((i = 1; i <= N; i++)); do
		# shellcheck disable=SC2059 # the pattern is ours
		f=$(printf "$1" "$i")
		diff -r -q "$WORK/pkg/files" "$f" >/dev/null 2>&1 && same=$((same + 1))
	done
	echo "$same"
}

# settle: R_STATUS and R_WHY from the exits wait_all counted and from R_SAME
settle() {
	# A process stopped by the bound makes its peers fail too: timeout wins.
	if ((W_TIMEOUT > 0)); then
		R_STATUS=timeout R_WHY="$W_TIMEOUT process(es) stopped after ${LIMIT}s"
	elif ((W_FAIL > 0)); then
		R_STATUS=failed R_WHY="$W_FAIL process(es) exited non-zero"
	elif ((R_SAME != N)); then
		R_STATUS=failed R_WHY="only $R_SAME/$N copies identical"
	else
		R_STATUS=ok R_WHY=""
	fi
}

run_treecast() { # run_treecast TREES TAG [SEED FLAG...] ; TREES "" = treecast's default
	local trees=$1 tag=$2 i jpids=() spid tx0 tx1 t0 t1 cfg=()
	shift 2
	local d=$WORK/$tag
	mkdir -p "$d"
	if [[ -n $trees ]]; then
		printf '[relay]\ntrees = %d\n' "$trees" >"$d/trees.toml"
		cfg=(--config "$d/trees.toml")
	fi
	for ((i = 1; i <= N; i++)); do
		mkdir -p "$d/h$i/home"
		local act=(--to "$d/h$i/to")
		case $KIND in
		image) act=(--write "$d/h$i/disk.img") ;;
		tar) act=(--exec "mkdir -p $d/h$i/x && tar -x -C $d/h$i/x" --stdin) ;;
		esac
		spawn_timed "$i" "$tag-h$i" "$d/join-h$i.log" env HOME="$d/h$i/home" XDG_CONFIG_HOME="$d/h$i/home/.config" \
			"${RUN_BIN:-$BIN}" join --name "h$i" --iface eth0 --group bench --trust-any \
			--timeout 120s --dir "$d/h$i/spool" "${act[@]}"
		jpids+=("$LAB_LAST_PID")
	done
	for ((i = 1; i <= N; i++)); do
		wait_listen "$i" t "" "${jpids[i - 1]}" || echo "bench: $tag: h$i's join is not listening; starting anyway"
	done
	mkdir -p "$d/h0/home"
	tx0=$(tx0_bytes)
	t0=$(now)
	spawn_timed 0 "$tag-h0" "$d/seed.log" env HOME="$d/h0/home" XDG_CONFIG_HOME="$d/h0/home/.config" \
		"${RUN_BIN:-$BIN}" seed --expect "$N" --wait 60s --iface eth0 --group bench "${CHUNK_ARGS[@]}" "${cfg[@]}" "$@" \
		--report "$d/report.json" "$PKG"
	spid=$LAB_LAST_PID
	wait_all "${jpids[@]}"
	t1=$(now)
	local jt=$W_TIMEOUT jf=$W_FAIL
	wait_all "$spid"
	W_TIMEOUT=$((W_TIMEOUT + jt)) W_FAIL=$((W_FAIL + jf))
	tx1=$(tx0_bytes)
	R_MK=$(calc %.2f "$t1 - $t0")
	R_UP=$(calc %.2f "($tx1 - $tx0) / $S")
	case $KIND in
	image) R_SAME=$(count_same "$d/h%d/disk.img") ;;
	tar) R_SAME=$(count_same_tree "$d/h%d/x") ;;
	*) R_SAME=$(count_same "$d/h%d/to/$(basename "$PKG")") ;;
	esac
	settle
	if jq -e '.nodes' "$d/report.json" >/dev/null 2>&1; then
		R_NOTE=$(jq -r --arg n "$N" '"report: ok \([.nodes[] | select(.status == "ok")] | length)/\($n), \(.seconds * 100 | round / 100) s"' "$d/report.json")
		if [[ $R_STATUS == failed ]]; then
			jq -r '.nodes[] | select(.status != "ok") | "    \(.name): \(.status): \(.error)"' "$d/report.json" | head -n 20
		fi
	else
		R_NOTE="no report"
	fi
	if [[ $R_STATUS == failed ]]; then
		echo "seed output (last lines):"
		tail -n 20 "$d/seed.log" | sed 's/^/    | /'
	fi
}

run_udpcast() {
	local i rpids=() spid tx0 tx1 t0 t1 d=$WORK/udpcast
	mkdir -p "$d"
	for ((i = 1; i <= N; i++)); do
		spawn_timed "$i" "udpcast-h$i" "$d/recv-h$i.log" \
			udp-receiver --interface eth0 --file "$d/h$i.out" --nokbd --exit-wait 100
		rpids+=("$LAB_LAST_PID")
	done
	for ((i = 1; i <= N; i++)); do
		wait_listen "$i" u 9000 "${rpids[i - 1]}" || echo "bench: udpcast: h$i's receiver is not bound to port 9000; starting anyway"
	done
	tx0=$(tx0_bytes)
	t0=$(now)
	spawn_timed 0 udpcast-h0 "$d/sender.log" \
		udp-sender --interface eth0 --file "$PKG" --nokbd --min-receivers "$N" \
		--full-duplex --max-bitrate "$BITS" --rexmit-hello-interval 100
	spid=$LAB_LAST_PID
	wait_all "${rpids[@]}"
	t1=$(now)
	local rt=$W_TIMEOUT rf=$W_FAIL
	wait_all "$spid"
	W_TIMEOUT=$((W_TIMEOUT + rt)) W_FAIL=$((W_FAIL + rf))
	tx1=$(tx0_bytes)
	R_MK=$(calc %.2f "$t1 - $t0")
	R_UP=$(calc %.2f "($tx1 - $tx0) / $S")
	R_SAME=$(count_same "$d/h%d.out")
	settle
	R_NOTE=$(tr '\r' '\n' <"$d/sender.log" | grep -o 're-xmits=[0-9]*' | tail -n 1 | sed 's/=0*\([0-9]\)/ \1/')
	if [[ $R_STATUS == failed ]]; then
		echo "sender output (last lines):"
		tr '\r' '\n' <"$d/sender.log" | tail -n 10 | sed 's/^/    | /'
	fi
	rm -f "$d"/h*.out
}

run_chain() {
	local i pids=() tx0 tx1 t0 t1 d=$WORK/chain
	mkdir -p "$d"
	spawn_timed "$N" "chain-h$N" "$d/h$N.log" socat -u "TCP4-LISTEN:$CHAIN_PORT,reuseaddr" "OPEN:$d/h$N.out,creat,trunc"
	pids+=("$LAB_LAST_PID")
	for ((i = N; i >= 1; i--)); do
		if ! wait_listen "$i" t "$CHAIN_PORT" "$LAB_LAST_PID"; then
			echo "bench: chain: h$i is not listening on port $CHAIN_PORT; starting anyway"
			break
		fi
		((i > 1)) || break
		# Host i-1's forwarder connects to host i as soon as it starts.
		# shellcheck disable=SC2016 # expanded by that bash, from its arguments
		spawn_timed $((i - 1)) "chain-h$((i - 1))" "$d/h$((i - 1)).log" bash -c 'set -o pipefail
			socat -u "TCP4-LISTEN:$1,reuseaddr" STDOUT | tee "$2" | socat -u STDIN "TCP4:$3:$1"' \
			chain "$CHAIN_PORT" "$d/h$((i - 1)).out" "$(lab_addr "$i")"
		pids+=("$LAB_LAST_PID")
	done
	# Host 0 only sends (it holds the package); its "copy" is not counted.
	tx0=$(tx0_bytes)
	t0=$(now)
	spawn_timed 0 chain-h0 "$d/h0.log" socat -u "OPEN:$PKG,rdonly" "TCP4:$(lab_addr 1):$CHAIN_PORT"
	pids+=("$LAB_LAST_PID")
	wait_all "${pids[@]}"
	t1=$(now)
	tx1=$(tx0_bytes)
	R_MK=$(calc %.2f "$t1 - $t0")
	R_UP=$(calc %.2f "($tx1 - $tx0) / $S")
	R_SAME=$(count_same "$d/h%d.out")
	settle
	R_NOTE=""
	if [[ $R_STATUS == failed ]]; then
		for ((i = 0; i <= N; i++)); do [[ -s $d/h$i.log ]] && sed "s/^/    h$i | /" "$d/h$i.log"; done | head -n 20
	fi
	rm -f "$d"/h*.out
}

# make_package: PKG, S bytes of the point's kind: random bytes; an ext4
# image of S bytes holding S/5 bytes of files from /usr (image); or a tar
# of S bytes of those files (tar). The files stay in $WORK/pkg/files.
make_package() {
	case $KIND in
	random) head -c "$S" /dev/urandom >"$PKG" ;;
	image | tar)
		local want=$S
		[[ $KIND == image ]] && want=$((S / 5))
		mkdir -p "$WORK/pkg/files"
		(cd /usr/lib/x86_64-linux-gnu && find . -type f -size -20M -print0 | head -z -n 20000 | tar --null -T - -cf - 2>/dev/null) |
			(cd "$WORK/pkg/files" && tar -xf - && find . -type f -print0 | xargs -0 du -b | sort -n |
				awk -v w="$want" '{ s += $1; if (s > w) print $2 }' | xargs -r rm -f)
		if [[ $KIND == image ]]; then
			truncate -s "$S" "$PKG"
			mkfs.ext4 -q -F -d "$WORK/pkg/files" "$PKG"
		else
			(cd "$WORK/pkg/files" && tar -cf "$PKG" .)
		fi
		;;
	esac
}

# ---- the points ---------------------------------------------------------------
RESULTS=() # "N|RATE|MB|SB|tool|ratio|up|cpu|identical"

for point in $POINTS; do
	IFS=: read -r N RATE MB <<<"$point"
	BITS=$(lab_rate_bits "$RATE")
	if [[ $MB == *KB ]]; then
		S=$((${MB%KB} * 1000)) SIZE="${MB%KB} KB"
	else
		S=$((MB * 1000000)) SIZE="$MB MB"
	fi
	SB=$(calc %.2f "$S * 8 / $BITS")
	LIMIT=${BENCH_LIMIT:-$(calc %.0f "10 * $SB + 60")}
	WORK=$OUT/n$N-$RATE-${SIZE// /}
	PKG=$WORK/pkg/bench.bin
	mkdir -p "$WORK/pkg"
	make_package
	S=$(stat -c %s "$PKG")
	echo
	echo "== $N receivers + 1 seed, links $RATE, S = $SIZE: S/B = $SB s; each run at most ${LIMIT}s"
	agg=$(((N + 1) * BITS / 1000000))
	((agg > 1500)) && echo "bench: note: the links add up to $agg Mbit/s, past the ~1500 lab.sh suggests for 2 cores"
	lab_up $((N + 1)) "$RATE"
	if [[ -n $SLOW_HOST ]]; then
		((SLOW_HOST <= N)) || { echo "bench: BENCH_SLOW names h$SLOW_HOST, but this point has h1..h$N" >&2; exit 2; }
		[[ $SLOW_WAY == up ]] || tc -n "$(lab_sw_ns)" qdisc change dev "p$SLOW_HOST" root tbf rate "$SLOW_RATE" burst "$(lab_burst "$RATE")" latency "$LAB_LATENCY"
		[[ $SLOW_WAY == down ]] || tc -n "$(lab_ns "$SLOW_HOST")" qdisc change dev eth0 root tbf rate "$SLOW_RATE" burst "$(lab_burst "$RATE")" latency "$LAB_LATENCY"
		echo "bench: h$SLOW_HOST's link is $SLOW_RATE ($SLOW_WAY) for every tool"
	fi
	[[ ${BENCH_RING:-0} == 1 ]] && lab_ring_check 3
	for tool in $TOOLS; do
		rm -rf "$WORK/cpu"
		mkdir -p "$WORK/cpu"
		c0=$(cpu_sample)
		w0=$(tx_all)
		case $tool in
		treecast) run_treecast "" treecast ;;
		base) RUN_BIN=$OUT/base run_treecast "" base ;;
		treecast1) run_treecast 1 treecast1 ;;
		treecast97) run_treecast "" treecast97 --max-rate "$((BITS * 97 / 100))bit" ;;
		udpcast) run_udpcast ;;
		chain) run_chain ;;
		esac
		LAB_PIDS=() # every one was waited for
		wire=$(calc %.2f "($(tx_all) - $w0) / $S / $N")
		busy=$(cpu_busy "$c0" "$(cpu_sample)")
		cpu=$(cpu_sum)
		case $R_STATUS in
		ok) ratio=$(calc %.2f "$R_MK / $SB") ;;
		*) ratio=$R_STATUS ;;
		esac
		[[ $R_STATUS == failed ]] && BENCH_FAILED=1
		printf 'bench: %-10s makespan %7.2f s = %5s x S/B, seed up %s x S, wire %s x S per receiver, CPU %5s s (machine %3s%% busy), identical %d/%d%s%s\n' \
			"$tool" "$R_MK" "$ratio" "$R_UP" "$wire" "$cpu" "$busy" "$R_SAME" "$N" \
			"${R_NOTE:+; $R_NOTE}" "${R_WHY:+; ${R_STATUS^^}: $R_WHY (logs in $WORK/${tool})}"
		RESULTS+=("$N|$RATE|$SIZE $KIND|$SB|$tool|$ratio|$R_UP|$wire|$cpu|$R_SAME/$N")
		rm -rf "$WORK/$tool"/h*/to "$WORK/$tool"/h*/spool "$WORK/$tool"/h*/disk.img "$WORK/$tool"/h*/x
	done
	lab_kill_pids
	lab_down
	[[ -n ${BENCH_FAILED:-}${BENCH_KEEP:-} ]] || rm -rf "$WORK"
done

echo
echo "== results: makespan / (S/B), seed upload / S, CPU seconds of all the tool's processes, byte-identical copies"
echo "   (N receivers + 1 seed; links full duplex at B; S in 10^6 bytes; $(nproc) cores; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
echo
fmt='| %4s | %-8s | %13s | %6s | %-10s | %14s | %9s | %6s | %7s | %9s |\n'
# shellcheck disable=SC2059 # fmt is ours
printf "$fmt" N B S 'S/B s' tool 'makespan/(S/B)' 'seed-up/S' 'wire/S' 'CPU-s' identical
echo '|-----:|----------|--------------:|-------:|------------|---------------:|----------:|-------:|--------:|----------:|'
for r in "${RESULTS[@]}"; do
	IFS='|' read -r -a f <<<"$r"
	# shellcheck disable=SC2059
	printf "$fmt" "${f[@]}"
done
[[ -z ${BENCH_FAILED:-} ]]
