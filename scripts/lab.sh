#!/usr/bin/env bash
# lab.sh - an emulated LAN in network namespaces, for treecast's e2e tests,
# benchmarks and demo.
#
# Picture: one "switch" namespace holds a Linux bridge; each host is its own
# namespace with one interface, eth0, a veth whose other end is a port on the
# bridge. Multicast (mDNS) and TCP are real. Each link is full-duplex at RATE:
# a tbf qdisc shapes the host's eth0 egress (upload) and the switch port's
# egress (download). Nothing is created in the root namespace, so the host's
# own network is untouched; only the kernel's neighbour table, which all
# namespaces share, is given room for the lab (lab_neigh_room).
#
#   LAB_PREFIX=demo scripts/lab.sh up 4 --rate 100mbit
#   LAB_PREFIX=demo scripts/lab.sh exec 0 ping -c1 10.77.0.2
#   LAB_PREFIX=demo scripts/lab.sh check          # multicast + measured rate
#   LAB_PREFIX=demo scripts/lab.sh ring           # all links busy at once
#   LAB_PREFIX=demo scripts/lab.sh down
#   LAB_PREFIX=demo scripts/lab.sh up 3 --subnet-b 2 --rate none   # two subnets
#
# As a library (e2e.sh, bench.sh, demo.sh):
#   source scripts/lab.sh
#   trap lab_cleanup EXIT        # kills what lab_spawn started, then lab_down
#   lab_up 10 100mbit
#   lab_spawn 3 "$LOG" timeout 60 treecast join ...   # pid in $LAB_LAST_PID
#   lab_exec 0 treecast seed ...
#
# Names: host I is netns ${LAB_PREFIX}-hI with address 10.77.(I/250).(I%250+1)/16,
# the switch is ${LAB_PREFIX}-sw. Every run uses its own prefix (default
# derived from the PID of the shell that sourced or ran this file), so two
# labs never clash; `down` removes everything with the prefix.
#
# Two subnets (lab_up_routed NA NB [RATE], or `up NA --subnet-b NB`): hosts
# h0..h(NA-1) on ${LAB_PREFIX}-sw with 10.77.0.(I+1)/24, hosts hNA.. on a
# second bridge, ${LAB_PREFIX}-sw2, with 10.78.0.(I-NA+1)/24, and a router,
# ${LAB_PREFIX}-rt, with a leg in each (10.77.0.254, 10.78.0.254) and IPv4
# forwarding on: every host's default route. Unicast crosses it; multicast
# (mDNS) does not, as between two subnets of a real site.

# ---- settings (environment) ------------------------------------------------
# LAB_PREFIX    name prefix for every namespace of this lab (default tl<PID>)
# LAB_LATENCY   tbf queue length expressed as time (default 20ms)
# LAB_BURST     tbf bucket size in bytes; default max(80 KiB, 1 ms of RATE)
#               (see lab_burst for the measurements behind it)
# LAB_LOSS      random loss of what each host receives, e.g. 1% (iptables'
#               statistic match, iptables-legacy), and no GSO on its link, so
#               that each loss is one frame
# LAB_IPV6      1 (default) keeps IPv6 link-local on (DAD off); 0 disables IPv6
# LAB_UTS       1 (default): commands run by lab_exec/lab_spawn see hostname hI
LAB_PREFIX_SET=${LAB_PREFIX:+1}
LAB_PREFIX=${LAB_PREFIX:-tl$$}
LAB_LATENCY=${LAB_LATENCY:-20ms}
LAB_IPV6=${LAB_IPV6:-1}
LAB_UTS=${LAB_UTS:-1}
LAB_REGISTRY=${LAB_REGISTRY:-/run/treecast-lab}
LAB_SUBNET_BITS=16
LAB_SPLIT=         # routed lab: the first host on subnet B (10.78.0.0/24)
LAB_PIDS=()        # background processes started by lab_spawn
LAB_LAST_PID=

lab_log() { printf 'lab: %s\n' "$*" >&2; }
lab_err() { printf 'lab: error: %s\n' "$*" >&2; }

# The prefix goes into namespace names and into the patterns `down` matches.
if [[ ! $LAB_PREFIX =~ ^[A-Za-z0-9_-]{1,40}$ ]]; then
	lab_err "LAB_PREFIX '$LAB_PREFIX' must be 1-40 of A-Z a-z 0-9 _ -"
	# shellcheck disable=SC2317 # exit when run, return when sourced
	return 2 2>/dev/null || exit 2
fi

# lab_ns I -> netns name of host I
lab_ns() { printf '%s-h%s\n' "$LAB_PREFIX" "$1"; }
lab_sw_ns() { printf '%s-sw\n' "$LAB_PREFIX"; }
lab_sw2_ns() { printf '%s-sw2\n' "$LAB_PREFIX"; }
lab_router_ns() { printf '%s-rt\n' "$LAB_PREFIX"; }
# The names `down` removes, as an extended regular expression.
lab_ns_pattern() { printf '^%s-(sw|sw2|rt|h[0-9]+)$\n' "$LAB_PREFIX"; }

# lab_addr I -> IPv4 address of host I (no prefix length)
lab_addr() {
	local i=$1
	[[ $i =~ ^[0-9]+$ ]] || { lab_err "host index must be a number, got '$i'"; return 1; }
	if [[ -n $LAB_SPLIT ]] && ((i >= LAB_SPLIT)); then
		printf '10.78.0.%d\n' $((i - LAB_SPLIT + 1))
	else
		printf '10.77.%d.%d\n' $((i / 250)) $((i % 250 + 1))
	fi
}

# lab_hosts -> number of hosts currently up for this prefix
lab_hosts() {
	ip netns list 2>/dev/null | awk '{print $1}' | grep -c -E "^${LAB_PREFIX}-h[0-9]+\$" || true
}

# lab_rate_bits RATE -> bits per second as an integer (100mbit -> 100000000).
# Accepts NUMBER followed by bit, kbit, mbit, gbit (case-insensitive, tc style).
lab_rate_bits() {
	local r=${1,,}
	if [[ $r =~ ^([0-9]+)(bit|kbit|mbit|gbit)$ ]]; then
		local n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]}
		case $u in
		bit) echo "$n" ;;
		kbit) echo $((n * 1000)) ;;
		mbit) echo $((n * 1000000)) ;;
		gbit) echo $((n * 1000000000)) ;;
		esac
	else
		lab_err "bad rate '$1': want e.g. 100mbit, 20mbit, 500kbit, 1gbit (or 'none')"
		return 1
	fi
}

# lab_burst RATE -> tbf burst in bytes: 1 ms worth of RATE, at least 80 KiB.
# Why 80 KiB: TCP on a veth hands the qdisc GSO super-packets of up to 64 KiB;
# tbf must split any packet larger than its bucket into ~45 frames, and that
# per-frame work is what a 2-core machine runs out of. Measured with `ring`
# (17 hosts at 100mbit, each sending to the next at once): 16 KiB burst ->
# 76 Mbit/s per link with the CPU 90% busy; 80 KiB -> 93.5 Mbit/s (the
# full-duplex ceiling: ACKs share the link) with the CPU 15% busy. A lone TCP
# flow gets ~95.5% of RATE as goodput either way (the rest is headers); at
# 10mbit the bigger bucket lets a 4 s measurement read ~1% high.
lab_burst() {
	if [[ -n ${LAB_BURST:-} ]]; then echo "$LAB_BURST"; return; fi
	local bits b
	bits=$(lab_rate_bits "$1") || return 1
	b=$((bits / 8 / 1000))
	((b < 81920)) && b=81920
	echo "$b"
}

# lab_switch_add NS: a namespace NS holding the bridge br0.
lab_switch_add() {
	ip netns add "$1"
	ip -n "$1" -batch - <<-EOF
		link set lo up
		link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
		link set br0 up
	EOF
}

# lab_link_add NS IF SW PORT ADDR/BITS [RATE BURST]: interface IF of NS, a veth
# whose other end is PORT on SW's bridge, with ADDR; shaped both ways when
# RATE is given.
lab_link_add() {
	local ns=$1 ifname=$2 sw=$3 port=$4 addr=$5 rate=${6:-} burst=${7:-}
	ip -n "$ns" -batch - <<-EOF
		link add $ifname type veth peer name $port netns $sw
		addr add $addr brd + dev $ifname
		link set $ifname up
	EOF
	ip -n "$sw" -batch - <<-EOF
		link set $port master br0
		link set $port up
	EOF
	if [[ -n $burst ]]; then
		tc -n "$ns" qdisc add dev "$ifname" root tbf rate "$rate" burst "$burst" latency "$LAB_LATENCY"
		tc -n "$sw" qdisc add dev "$port" root tbf rate "$rate" burst "$burst" latency "$LAB_LATENCY"
	fi
	if [[ -n ${LAB_LOSS:-} ]]; then
		# One frame per packet, so that a loss is one frame's, as on a wire.
		ip -n "$ns" link set "$ifname" gso_max_segs 1
		ip -n "$sw" link set "$port" gso_max_segs 1
		# Dropped as they arrive: a sender's own netfilter drop is a local
		# congestion signal to its TCP, not a loss on the wire.
		ip netns exec "$ns" iptables-legacy -A INPUT -i "$ifname" -m statistic --mode random --probability "$(lab_loss_p)" -j DROP
	fi
}

# lab_loss_p: LAB_LOSS as a probability (1% -> 0.01).
lab_loss_p() {
	if [[ ! $LAB_LOSS =~ ^([0-9]+(\.[0-9]+)?)%$ ]]; then
		lab_err "bad LAB_LOSS '$LAB_LOSS': want a percentage, e.g. 1% or 0.5%"
		return 1
	fi
	awk "BEGIN { print ${BASH_REMATCH[1]} / 100 }"
}

# lab_ns_add NS: a namespace with lo up, set as every lab machine is.
lab_ns_add() {
	local ns=$1
	ip netns add "$ns"
	# Before any interface exists, so they inherit: no IPv6 DAD (addresses
	# usable at once), answer pings to broadcast/multicast (for `check`).
	if [[ $LAB_IPV6 == 1 ]]; then
		ip netns exec "$ns" sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0 \
			net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	else
		ip netns exec "$ns" sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0 \
			net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	fi
	ip -n "$ns" link set lo up
}

# lab_host_add I SW BITS ROUTE [RATE BURST]: host I with eth0 on SW's bridge
# (port pI), its address from lab_addr with prefix length BITS, and the
# default route ROUTE ("dev eth0", or "via GATEWAY").
lab_host_add() {
	local i=$1 sw=$2 bits=$3 route=$4 ns
	ns=$(lab_ns "$i")
	lab_ns_add "$ns"
	lab_link_add "$ns" eth0 "$sw" "p$i" "$(lab_addr "$i")/$bits" "${@:5}"
	# shellcheck disable=SC2086 # ROUTE is several words
	ip -n "$ns" route add default $route
}

# lab_up_check N RATE: the checks before a lab is built; sets LAB_BURST_NOW
# (empty: unshaped) and registers the lab.
lab_up_check() {
	local n=$1 rate=$2
	[[ $EUID -eq 0 ]] || { lab_err "needs root (network namespaces)"; return 1; }
	if ip netns list | awk '{print $1}' | grep -q -E "$(lab_ns_pattern)"; then
		lab_err "a lab with prefix '$LAB_PREFIX' is already up: run 'LAB_PREFIX=$LAB_PREFIX $0 down' first"
		LAB_UP_OK=1 # not ours: leave it alone
		return 1
	fi
	LAB_BURST_NOW=
	if [[ $rate != none && $rate != 0 ]]; then
		LAB_BURST_NOW=$(lab_burst "$rate") || return 1
	fi
	if [[ -n ${LAB_LOSS:-} ]]; then
		lab_loss_p >/dev/null || return 1
		command -v iptables-legacy >/dev/null || { lab_err "LAB_LOSS needs iptables-legacy: apt-get install iptables"; return 1; }
	fi
	lab_neigh_room "$n"
	mkdir -p "$LAB_REGISTRY"
	printf 'hosts=%s rate=%s%s\n' "$n" "$rate" "${LAB_SPLIT:+ split=$LAB_SPLIT}" >"$LAB_REGISTRY/$LAB_PREFIX"
}

# lab_neigh_room N: room in the kernel's neighbour (ARP) table for N hosts
# that each reach every other. The table is one for all namespaces, 1024
# entries by default; past that, new neighbours go unresolved and connects
# between lab hosts time out: 129 hosts, a few sessions of different trees
# in one lab, and relays could not reach their parents ("neighbor table
# overflow!" in the kernel's log; 62 s where 8.9 was usual). Raised in the
# root namespace, the only place it can be, and never lowered.
lab_neigh_room() {
	local need=$(($1 * $1 + 1024)) cur
	cur=$(sysctl -n net.ipv4.neigh.default.gc_thresh3 2>/dev/null) || return 0
	((cur >= need)) && return 0
	sysctl -qw net.ipv4.neigh.default.gc_thresh2="$need" net.ipv4.neigh.default.gc_thresh3="$need" ||
		lab_log "warning: could not raise the neighbour table to $need entries: labs of many hosts may fail to connect"
}

# lab_up N [RATE]  (RATE default 100mbit; "none" or "0" = unshaped)
lab_up() {
	local n=${1:-} rate=${2:-100mbit}
	if [[ ! $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 4000)); then
		lab_err "up: N must be 1..4000, got '${n}'"
		return 1
	fi
	LAB_SPLIT=
	lab_up_check "$n" "$rate" || return 1
	local sw i shape=()
	sw=$(lab_sw_ns)
	[[ -n $LAB_BURST_NOW ]] && shape=("$rate" "$LAB_BURST_NOW")
	lab_switch_add "$sw"
	for ((i = 0; i < n; i++)); do
		lab_host_add "$i" "$sw" "$LAB_SUBNET_BITS" "dev eth0" "${shape[@]}"
	done
	lab_log "up: $n hosts (${LAB_PREFIX}-h0..h$((n - 1))), 10.77.0.0/16, links ${rate}${LAB_BURST_NOW:+ full-duplex (tbf burst ${LAB_BURST_NOW}B latency $LAB_LATENCY)}${LAB_LOSS:+, $LAB_LOSS loss each way}"
}

# lab_up_routed NA NB [RATE]: two subnets joined by a router (see the top of
# this file): h0..h(NA-1) on 10.77.0.0/24, h(NA)..h(NA+NB-1) on 10.78.0.0/24.
# Every link, the router's two included, is shaped at RATE (default none).
lab_up_routed() {
	local na=${1:-} nb=${2:-} rate=${3:-none}
	if [[ ! $na =~ ^[0-9]+$ || ! $nb =~ ^[0-9]+$ ]] || ((na < 1 || na > 253 || nb < 1 || nb > 253)); then
		lab_err "up: each subnet holds 1..253 hosts, got '${na}' and '${nb}'"
		return 1
	fi
	LAB_SPLIT=$na
	lab_up_check $((na + nb)) "$rate" || return 1
	local swa swb rt i shape=()
	swa=$(lab_sw_ns) swb=$(lab_sw2_ns) rt=$(lab_router_ns)
	[[ -n $LAB_BURST_NOW ]] && shape=("$rate" "$LAB_BURST_NOW")
	lab_switch_add "$swa"
	lab_switch_add "$swb"
	lab_ns_add "$rt"
	ip netns exec "$rt" sysctl -qw net.ipv4.ip_forward=1
	lab_link_add "$rt" eth0 "$swa" rt 10.77.0.254/24 "${shape[@]}"
	lab_link_add "$rt" eth1 "$swb" rt 10.78.0.254/24 "${shape[@]}"
	for ((i = 0; i < na; i++)); do
		lab_host_add "$i" "$swa" 24 "via 10.77.0.254" "${shape[@]}"
	done
	for ((i = na; i < na + nb; i++)); do
		lab_host_add "$i" "$swb" 24 "via 10.78.0.254" "${shape[@]}"
	done
	lab_log "up: $na hosts (h0..h$((na - 1))) on 10.77.0.0/24 and $nb (h$na..h$((na + nb - 1))) on 10.78.0.0/24, joined by router ${rt}; links ${rate}"
}

# lab_exec I CMD... : run CMD in host I (foreground). With LAB_UTS=1 (the
# default) CMD also gets its own hostname, hI, as a separate machine would
# (a UTS namespace; the filesystem stays shared).
lab_exec() {
	local i=$1
	shift
	if [[ $LAB_UTS == 1 ]]; then
		# shellcheck disable=SC2016 # expanded by sh, not here
		ip netns exec "$(lab_ns "$i")" unshare --uts -- \
			sh -c 'echo "$0" >/proc/sys/kernel/hostname && exec "$@"' "h$i" "$@"
	else
		ip netns exec "$(lab_ns "$i")" "$@"
	fi
}

# lab_spawn I LOG CMD... : start CMD in host I in the background, output to LOG.
# Its pid goes to LAB_LAST_PID and LAB_PIDS (killed by lab_cleanup); `wait
# $LAB_LAST_PID` gives its exit code. `ip netns exec` execs CMD, so the pid is
# CMD's own.
lab_spawn() {
	local i=$1 log=$2
	shift 2
	if [[ $LAB_UTS == 1 ]]; then
		# shellcheck disable=SC2016 # expanded by sh, not here
		ip netns exec "$(lab_ns "$i")" unshare --uts -- \
			sh -c 'echo "$0" >/proc/sys/kernel/hostname && exec "$@"' "h$i" "$@" >"$log" 2>&1 </dev/null &
	else
		ip netns exec "$(lab_ns "$i")" "$@" >"$log" 2>&1 </dev/null &
	fi
	LAB_LAST_PID=$!
	LAB_PIDS+=("$LAB_LAST_PID")
}

# lab_kill_pids: TERM, then KILL, everything lab_spawn started in this shell.
lab_kill_pids() {
	local p alive=()
	for p in "${LAB_PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null && alive+=("$p")
	done
	((${#alive[@]})) || { LAB_PIDS=(); return 0; }
	kill -TERM "${alive[@]}" 2>/dev/null || true
	for _ in $(seq 1 30); do
		local still=()
		for p in "${alive[@]}"; do kill -0 "$p" 2>/dev/null && still+=("$p"); done
		((${#still[@]})) || break
		sleep 0.1
	done
	kill -KILL "${alive[@]}" 2>/dev/null || true
	wait "${alive[@]}" 2>/dev/null || true
	LAB_PIDS=()
}

# lab_down: kill every process inside this prefix's namespaces, delete them.
lab_down() {
	local nss ns pids
	nss=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "$(lab_ns_pattern)" || true)
	for ns in $nss; do
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		# shellcheck disable=SC2086 # a list of pids
		[[ -z $pids ]] || kill -TERM $pids 2>/dev/null || true
	done
	if [[ -n $nss ]]; then
		for _ in $(seq 1 20); do
			pids=""
			for ns in $nss; do pids+=" $(ip netns pids "$ns" 2>/dev/null || true)"; done
			[[ -z ${pids// /} ]] && break
			sleep 0.1
		done
		for ns in $nss; do
			pids=$(ip netns pids "$ns" 2>/dev/null || true)
			# shellcheck disable=SC2086
			[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
		done
		# Deleting the switch first drops all veth pairs in one go.
		for ns in $nss; do ip netns del "$ns" 2>/dev/null || true; done
	fi
	rm -f "$LAB_REGISTRY/$LAB_PREFIX"
	[[ -n $nss ]] && lab_log "down: removed $(wc -w <<<"$nss") namespaces with prefix $LAB_PREFIX"
	return 0
}

# lab_cleanup: for traps. Kills spawned processes, tears the lab down.
lab_cleanup() {
	lab_kill_pids
	lab_down
}

# lab_mcast_check: a datagram that h0 sends to the mDNS group (224.0.0.251:5353,
# and [ff02::fb]:5353 when IPv6 is on) reaches a listener joined to that group
# in every other host. (A ping to 224.0.0.1 is no good check past a few dozen
# hosts: the kernel's shared ICMP rate limit drops the echo replies.)
# Needs socat. Prints one line per family, returns 0 if all got it.
lab_mcast_check() {
	local n rc=0 fam
	n=$(lab_hosts)
	((n >= 2)) || { lab_err "mcast check needs at least 2 hosts"; return 1; }
	command -v socat >/dev/null || { lab_err "mcast check needs socat"; return 1; }
	local fams=(4)
	[[ $LAB_IPV6 == 1 ]] && fams+=(6)
	for fam in "${fams[@]}"; do
		local dir i pids=() listen send got=0 port=5353
		dir=$(mktemp -d)
		if [[ $fam == 4 ]]; then
			listen="UDP4-RECVFROM:$port,reuseaddr,ip-add-membership=224.0.0.251:eth0"
			send="UDP4-DATAGRAM:224.0.0.251:$port,ip-multicast-if=$(lab_addr 0)"
		else
			listen="UDP6-RECVFROM:$port,reuseaddr,ipv6-join-group=[ff02::fb]:eth0"
			send="UDP6-DATAGRAM:[ff02::fb%eth0]:$port"
		fi
		# Each listener exits after one datagram (or after 8 s).
		for ((i = 1; i < n; i++)); do
			ip netns exec "$(lab_ns "$i")" timeout 8 socat -u "$listen" "OPEN:$dir/h$i,creat" 2>/dev/null &
			pids+=($!)
		done
		for ((i = 1; i < n; i++)); do # bounded: ~2 s per host at most
			for _ in $(seq 1 40); do
				ip netns exec "$(lab_ns "$i")" ss -lun 2>/dev/null | grep -q ":$port " && break
				sleep 0.05
			done
		done
		for _ in 1 2 3; do
			echo "treecast-lab-mdns-probe" | lab_exec 0 timeout 3 socat -u STDIN "$send" 2>/dev/null || true
			sleep 0.2
		done
		wait "${pids[@]}" 2>/dev/null || true
		got=$(grep -l treecast-lab-mdns-probe "$dir"/h* 2>/dev/null | wc -l)
		rm -rf "$dir"
		if ((got == n - 1)); then
			echo "lab: multicast IPv$fam mDNS group from h0: $got/$((n - 1)) hosts received it: ok"
		else
			echo "lab: multicast IPv$fam mDNS group from h0: only $got/$((n - 1)) hosts received it: FAILED"
			rc=1
		fi
	done
	return $rc
}

# lab_measure FROM TO BYTES -> prints goodput in Mbit/s of one TCP transfer
# (nc) from host FROM to host TO. Needs netcat-openbsd.
lab_measure() {
	local from=$1 to=$2 bytes=${3:-25000000} port=${4:-5001} t0 t1 rpid
	lab_exec "$to" timeout 60 nc -l "$port" >/dev/null &
	rpid=$!
	for _ in $(seq 1 50); do
		lab_exec "$to" ss -ltn 2>/dev/null | grep -q ":$port " && break
		sleep 0.05
	done
	t0=$(date +%s.%N)
	head -c "$bytes" /dev/zero | lab_exec "$from" timeout 60 nc -N "$(lab_addr "$to")" "$port"
	t1=$(date +%s.%N)
	wait "$rpid" || true
	awk -v b="$bytes" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f\n", b * 8 / (t1 - t0) / 1e6 }'
}

# lab_rate_check [RATE]: measures h0->h1 alone, then h0->h1 and h1->h0 at the
# same time (full duplex), then h1+h2 -> h0 at once (download is shaped too).
lab_rate_check() {
	local rate=${1:-}
	[[ -z $rate ]] && rate=$(sed -n 's/.*rate=\([^ ]*\).*/\1/p' "$LAB_REGISTRY/$LAB_PREFIX" 2>/dev/null)
	[[ -z $rate || $rate == none || $rate == 0 ]] && { echo "lab: links unshaped, nothing to measure"; return 0; }
	local bits bytes n one a b c d
	bits=$(lab_rate_bits "$rate") || return 1
	bytes=$((bits * 4 / 8)) # ~4 s of transfer
	n=$(lab_hosts)
	one=$(lab_measure 0 1 "$bytes" 5001)
	echo "lab: TCP h0->h1 alone: $one Mbit/s goodput; configured $rate = $((bits / 1000000)) Mbit/s; ratio $(awk -v m="$one" -v b="$bits" 'BEGIN{printf "%.3f", m*1e6/b}') (max ~0.956: headers)"
	a=$(mktemp) b=$(mktemp)
	lab_measure 0 1 "$bytes" 5002 >"$a" &
	local p1=$!
	lab_measure 1 0 "$bytes" 5003 >"$b" &
	local p2=$!
	wait "$p1" "$p2"
	echo "lab: TCP full duplex h0->h1 $(cat "$a") Mbit/s while h1->h0 $(cat "$b") Mbit/s"
	if ((n >= 3)); then
		lab_measure 1 0 "$bytes" 5004 >"$a" &
		p1=$!
		lab_measure 2 0 "$bytes" 5005 >"$b" &
		p2=$!
		wait "$p1" "$p2"
		c=$(cat "$a") d=$(cat "$b")
		echo "lab: TCP h1->h0 $c + h2->h0 $d = $(awk -v x="$c" -v y="$d" 'BEGIN{printf "%.2f", x+y}') Mbit/s into h0 (download shaped; each ran ~half the time alone)"
	fi
	rm -f "$a" "$b"
}

# lab_ring_check [SECONDS]: every host sends to the next one at once, so every
# link is busy both ways: the lab's ceiling when a whole fleet moves data
# (on 2 cores the CPU, not tbf, may be the limit). Prints per-link goodput
# (min/avg/max, Mbit/s) and how busy the CPU was.
lab_ring_check() {
	local secs=${1:-4} rate n bits bytes i dir data port=5099 t0s
	rate=$(sed -n 's/.*rate=\([^ ]*\).*/\1/p' "$LAB_REGISTRY/$LAB_PREFIX" 2>/dev/null)
	[[ -z $rate || $rate == none || $rate == 0 ]] && { echo "lab: links unshaped, no ring check"; return 0; }
	n=$(lab_hosts)
	((n >= 2)) || { lab_err "ring check needs at least 2 hosts"; return 1; }
	bits=$(lab_rate_bits "$rate")
	bytes=$((bits * secs / 8))
	dir=$(mktemp -d)
	data=$dir/data
	head -c "$bytes" /dev/zero >"$data"
	local lpids=() spids=()
	for ((i = 0; i < n; i++)); do
		lab_exec $(((i + 1) % n)) timeout $((secs * 10 + 20)) nc -l "$port" >/dev/null 2>&1 &
		lpids+=($!)
	done
	for ((i = 0; i < n; i++)); do
		for _ in $(seq 1 40); do
			lab_exec "$i" ss -ltn 2>/dev/null | grep -q ":$port " && break
			sleep 0.05
		done
	done
	local c0 c1
	c0=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
	for ((i = 0; i < n; i++)); do
		(
			t0s=$(date +%s.%N)
			lab_exec "$i" timeout $((secs * 10 + 20)) nc -N "$(lab_addr $(((i + 1) % n)))" "$port" <"$data" >/dev/null 2>&1 || true
			awk -v a="$t0s" -v b="$(date +%s.%N)" -v by="$bytes" 'BEGIN{printf "%.2f\n", by*8/(b-a)/1e6}' >"$dir/r$i"
		) &
		spids+=($!)
	done
	wait "${spids[@]}" 2>/dev/null || true
	c1=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
	wait "${lpids[@]}" 2>/dev/null || true
	cat "$dir"/r* | awk -v n="$n" -v rate="$rate" -v bits="$bits" -v c0="$c0" -v c1="$c1" '
		{ s += $1; if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1 }
		END {
			split(c0, a, " "); split(c1, b, " "); busy = b[1] - a[1]; idle = b[2] - a[2]
			printf "lab: ring, all %d links busy both ways: per link min %.1f avg %.1f max %.1f Mbit/s of %s (avg %.0f%%), %.0f Mbit/s in all; CPU %.0f%% busy\n",
				n, min, s / NR, max, rate, 100 * s / NR / (bits / 1e6), s, 100 * busy / (busy + idle)
		}'
	rm -rf "$dir"
}

lab_usage() {
	cat <<-EOF
		usage: LAB_PREFIX=NAME $0 COMMAND
		  up N [--rate RATE]   N hosts h0..h(N-1) on one bridge; links full-duplex at RATE
		                       (default 100mbit; 'none' = unshaped)
		  up N --subnet-b M [--rate RATE]
		                       N hosts on 10.77.0.0/24 and M more on 10.78.0.0/24,
		                       joined by a router that passes no multicast
		  down [--all]         remove every namespace and process of LAB_PREFIX
		                       (--all: of every lab this script brought up)
		  exec I CMD...        run CMD in host I
		  addr I               print host I's IPv4 address
		  ns I                 print host I's netns name
		  list                 list labs that are up
		  check [--rate RATE]  check multicast between hosts and measure link rates
		  ring [SECONDS]       every host sends to the next at once: the lab's ceiling
		Keep the sum of all links' rates under ~1.5 Gbit/s on a 2-core machine.
	EOF
}

lab_main() {
	set -euo pipefail
	local cmd=${1:-}
	[[ -n $cmd ]] || { lab_usage >&2; return 2; }
	shift
	case $cmd in
	up)
		local n=${1:-} rate=100mbit nb=
		[[ $n =~ ^[0-9]+$ ]] || { lab_usage >&2; return 2; }
		shift
		while (($#)); do
			case $1 in
			--rate) rate=${2:?--rate needs a value}; shift 2 ;;
			--rate=*) rate=${1#--rate=}; shift ;;
			--subnet-b) nb=${2:?--subnet-b needs a number of hosts}; shift 2 ;;
			*) lab_err "up: unknown argument '$1'"; return 2 ;;
			esac
		done
		if [[ -z ${LAB_PREFIX_SET:-} ]]; then
			lab_log "prefix '$LAB_PREFIX' (set LAB_PREFIX to choose); to remove: LAB_PREFIX=$LAB_PREFIX $0 down"
		fi
		# A failed `up` leaves nothing behind.
		trap '[[ -n ${LAB_UP_OK:-} ]] || lab_down' EXIT
		if [[ -n $nb ]]; then
			lab_up_routed "$n" "$nb" "$rate"
		else
			lab_up "$n" "$rate"
		fi
		LAB_UP_OK=1
		;;
	down)
		if [[ ${1:-} == --all ]]; then
			local f
			for f in "$LAB_REGISTRY"/*; do
				[[ -e $f ]] || continue
				LAB_PREFIX=$(basename "$f") lab_down
			done
		else
			[[ -n ${LAB_PREFIX_SET:-} ]] || { lab_err "down: set LAB_PREFIX to the lab's prefix (or use --all)"; return 2; }
			lab_down
		fi
		;;
	exec)
		(($# >= 2)) || { lab_usage >&2; return 2; }
		lab_exec "$@"
		;;
	addr)
		LAB_SPLIT=$(sed -n 's/.* split=\([0-9]*\).*/\1/p' "$LAB_REGISTRY/$LAB_PREFIX" 2>/dev/null || true)
		lab_addr "${1:?addr needs a host index}"
		;;
	ns) lab_ns "${1:?ns needs a host index}" ;;
	list)
		local f
		for f in "$LAB_REGISTRY"/*; do
			[[ -e $f ]] && echo "$(basename "$f") $(cat "$f")"
		done
		return 0
		;;
	check)
		local rate=""
		[[ ${1:-} == --rate ]] && rate=${2:-}
		[[ $(lab_hosts) -ge 2 ]] || { lab_err "check: no lab with prefix '$LAB_PREFIX' (at least 2 hosts) is up"; return 1; }
		local rc=0
		lab_mcast_check || rc=1
		lab_rate_check "$rate" || rc=1
		return $rc
		;;
	ring)
		[[ $(lab_hosts) -ge 2 ]] || { lab_err "ring: no lab with prefix '$LAB_PREFIX' (at least 2 hosts) is up"; return 1; }
		lab_ring_check "${1:-4}"
		;;
	-h | --help | help) lab_usage ;;
	*) lab_usage >&2; return 2 ;;
	esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	lab_main "$@"
fi
