#!/usr/bin/env bash
# install.sh - installs treecast on a Linux fleet machine as a systemd service
# running `treecast serve`, or removes it.
#
#   sudo bash install.sh --trust 3f9a-77c2-19ab-e0d4 --group line2 \
#       --extract /opt/app --exec 'systemctl restart app'
#   sudo bash install.sh --uninstall [--purge]
#   bash install.sh --print-unit [options]    the unit it would install; changes nothing
#
# Installs the binary (--binary, default: treecast-linux-<arch> beside this
# script, else ./treecast) as PREFIX/bin/treecast, its man page and bash, zsh
# and fish completions, /etc/treecast/config.toml (from the options; an
# existing one is kept unless options are given, then saved as .bak), and
# /etc/systemd/system/treecast.service, which it enables and (re)starts.
# Spool and state live in /var/lib/treecast (StateDirectory=treecast).
#
# The unit is sandboxed as far as the configured actions allow. Without
# --exec: the filesystem is read-only to treecast but for its state folder
# and the --to/--extract directories, and it gets no devices, kernel
# tunables, namespaces or capabilities beyond overriding file permissions.
# With --exec, the command runs as root inside the service's sandbox and
# may need to write anywhere, start services or load modules, so only the
# settings that no install step needs are kept. After changing [install] in
# the config, run install.sh again (without options) to refit the unit.
#
# Options:
#   --binary PATH     the treecast binary to install
#   --trust KEY       seed key to trust: fingerprint, base64 key or .pub file
#                     (copied to /etc/treecast/); repeatable; needed for a new config
#   --group NAME      the receiver's group
#   --to DIR | --extract DIR | --exec CMD    what to do with a package (at least one)
#   --secret FILE     fleet secret, copied to /etc/treecast/fleet.secret (0600)
#   --iface NAME      the one network interface to use
#   --no-start        enable the service, but do not start it now
#   --prefix DIR      where the binary, man page and completions go (/usr/local)
#   --root DIR        install into DIR as if it were / (packaging, tests): no
#                     systemctl, and no root needed
#   --uninstall       stop and disable the service, remove what install.sh
#                     installed; config and state stay unless --purge
set -euo pipefail

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

[[ $(uname -s) == Linux ]] || die "it sets up a systemd service on Linux; on $(uname -s), run \`treecast serve\` under the system's own service manager (launchd, a Windows service wrapper)"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ACTION=install
BINARY=
PREFIX=/usr/local
ROOT_DIR=
START=1
PURGE=
TRUST=()
GROUP=
TO=
EXTRACT=
EXEC=
SECRET=
IFACE=
CONFIG_GIVEN=

while (($#)); do
	case $1 in
	--binary) BINARY=${2:?--binary needs a PATH}; shift ;;
	--trust) TRUST+=("${2:?--trust needs a KEY}"); CONFIG_GIVEN=1; shift ;;
	--group) GROUP=${2?--group needs a NAME}; CONFIG_GIVEN=1; shift ;;
	--to) TO=${2:?--to needs a DIR}; CONFIG_GIVEN=1; shift ;;
	--extract) EXTRACT=${2:?--extract needs a DIR}; CONFIG_GIVEN=1; shift ;;
	--exec) EXEC=${2:?--exec needs a CMD}; CONFIG_GIVEN=1; shift ;;
	--secret) SECRET=${2:?--secret needs a FILE}; CONFIG_GIVEN=1; shift ;;
	--iface) IFACE=${2:?--iface needs a NAME}; CONFIG_GIVEN=1; shift ;;
	--no-start) START= ;;
	--prefix) PREFIX=${2:?--prefix needs a DIR}; shift ;;
	--root) ROOT_DIR=${2:?--root needs a DIR}; shift ;;
	--uninstall) ACTION=uninstall ;;
	--purge) PURGE=1 ;;
	--print-unit) ACTION=print-unit ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
[[ -z $PURGE || $ACTION == uninstall ]] || die "--purge goes with --uninstall"
[[ $PREFIX == /* ]] || die "--prefix $PREFIX: give an absolute path"

R=${ROOT_DIR%/}
BIN=$PREFIX/bin/treecast
ETC=/etc/treecast
CONF=$ETC/config.toml
STATE=/var/lib/treecast
UNIT=/etc/systemd/system/treecast.service
MAN=$PREFIX/share/man/man1/treecast.1
COMPLETIONS=(
	"bash:$PREFIX/share/bash-completion/completions/treecast"
	"zsh:$PREFIX/share/zsh/site-functions/_treecast"
	"fish:$PREFIX/share/fish/vendor_completions.d/treecast.fish"
)

# systemd is usable: not packaging into --root, and PID 1 is systemd.
have_systemd() { [[ -z $ROOT_DIR && -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

# toml_str S: S as a TOML basic string.
toml_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\t'/\\t}
	s=${s//$'\n'/\\n}
	printf '"%s"' "$s"
}

# config_value KEY: the string value of [install] KEY in the installed
# config, as install.sh writes it ("" if unset).
config_value() {
	[[ -f $R$CONF ]] || return 0
	awk -v key="$1" '
		/^[ \t]*\[/ { sect = $0; gsub(/[ \t\[\]]/, "", sect); next }
		sect == "install" && $0 ~ "^[ \t]*" key "[ \t]*=" {
			v = $0; sub(/^[^=]*=[ \t]*"/, "", v); sub(/"[ \t]*(#.*)?$/, "", v)
			gsub(/\\"/, "\"", v); gsub(/\\\\/, "\\", v); print v; exit
		}' "$R$CONF"
}

# unit: the service unit for the configured actions ($TO, $EXTRACT, $EXEC).
unit() {
	local rw=() p
	for p in "$TO" "$EXTRACT"; do
		[[ -n $p ]] && rw+=("$p")
	done
	cat <<EOF
# treecast agent, installed by install.sh; run it again to refit this unit
# after changing [install] in $CONF.
[Unit]
Description=treecast agent: takes packages from trusted seeds on the LAN
Documentation=man:treecast(1)
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
ExecStart=$BIN serve --config $CONF --dir $STATE
Restart=on-failure
RestartSec=5s
# Exit 2 is a bad flag or setting: restarting does not fix it.
RestartPreventExitStatus=2
StateDirectory=treecast
StateDirectoryMode=0700
UMask=0022

# Sandbox. Kept whatever --exec does: no install step needs these.
PrivateTmp=yes
ProtectClock=yes
ProtectHostname=yes
ProtectKernelLogs=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native
# mDNS and sessions need IPv4/IPv6; AF_NETLINK lists the interfaces.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
EOF
	if [[ -n $EXEC ]]; then
		cat <<EOF
# No more: --exec runs its command as root in this sandbox, and an install
# step may write anywhere, start services or load kernel modules.
EOF
	else
		cat <<EOF
# Without --exec, treecast only writes its state and the --to/--extract
# directories.
ProtectSystem=strict
ReadWritePaths=$(unit_paths "${rw[@]}")
ProtectHome=$(home_setting "${rw[@]}")
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictSUIDSGID=yes
NoNewPrivileges=yes
MemoryDenyWriteExecute=yes
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Root without these cannot write into directories owned by other users.
CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_FOWNER
EOF
	fi
	cat <<EOF

[Install]
WantedBy=multi-user.target
EOF
}

# unit_paths DIR...: the directories quoted for a unit file, % escaped.
unit_paths() {
	local d out=()
	for d in "$@"; do
		d=${d//%/%%}
		out+=("\"${d//\"/\\\"}\"")
	done
	echo "${out[*]}"
}

# home_setting DIR...: ProtectHome=yes hides /home, /root and /run/user;
# read-only when a directory to write lies there (ReadWritePaths opens it).
home_setting() {
	local d
	for d in "$@"; do
		case $d in /home | /home/* | /root | /root/* | /run/user | /run/user/*)
			echo read-only
			return ;;
		esac
	done
	echo yes
}

# check_dir FLAG DIR: an absolute path (the service has no working directory
# of the operator's).
check_dir() {
	[[ -z $2 || $2 == /* ]] || die "$1 $2: give an absolute path"
}

# actions_from_config: fill TO, EXTRACT, EXEC from the installed config when
# no options were given.
actions_from_config() {
	[[ -z $CONFIG_GIVEN ]] || return 0
	TO=$(config_value to)
	EXTRACT=$(config_value extract)
	EXEC=$(config_value exec)
}

write_config() {
	local f=$1 t list=() dest
	for t in "${TRUST[@]}"; do
		if [[ -f $t ]]; then # a .pub file: the service reads its own copy
			dest=$ETC/$(basename "$t")
			install -m 0644 "$t" "$R$dest"
			t=$dest
		fi
		list+=("$(toml_str "$t")")
	done
	{
		echo "# treecast agent settings, written by install.sh. Every key and its default:"
		echo "# man treecast, or config.example.toml. After changing [install], run"
		echo "# install.sh again: the service's sandbox is fitted to it."
		echo "[receiver]"
		echo "trust = [$(IFS=,; echo "${list[*]}")]"
		[[ -n $GROUP ]] && echo "group = $(toml_str "$GROUP")"
		[[ -n $SECRET ]] && echo "secret = $(toml_str "$ETC/fleet.secret")"
		echo
		echo "[install]"
		[[ -n $TO ]] && echo "to = $(toml_str "$TO")"
		[[ -n $EXTRACT ]] && echo "extract = $(toml_str "$EXTRACT")"
		[[ -n $EXEC ]] && echo "exec = $(toml_str "$EXEC")"
		if [[ -n $IFACE ]]; then
			echo
			echo "[discover]"
			echo "iface = $(toml_str "$IFACE")"
		fi
	} >"$f"
}

# find_binary: the binary to install.
find_binary() {
	[[ -n $BINARY ]] && { [[ -f $BINARY ]] || die "--binary $BINARY: no such file"; echo "$BINARY"; return; }
	local arch
	case $(uname -m) in
	x86_64 | amd64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	armv7* | armv8l) arch=armv7 ;;
	*) arch=$(uname -m) ;;
	esac
	local c
	for c in "$HERE/treecast-linux-$arch" ./treecast; do
		[[ -f $c ]] && { echo "$c"; return; }
	done
	die "no treecast binary: give --binary PATH (a release's treecast-linux-$arch)"
}

do_install() {
	[[ -n $ROOT_DIR || $EUID -eq 0 ]] || die "installing a service needs root: sudo bash $0 ..."
	check_dir --to "$TO"
	check_dir --extract "$EXTRACT"
	[[ -z $SECRET || -f $SECRET ]] || die "--secret $SECRET: no such file"
	if [[ -n $CONFIG_GIVEN ]]; then
		((${#TRUST[@]})) || die "say which seed to trust: --trust FINGERPRINT (treecast keygen prints it)"
		[[ -n $TO$EXTRACT$EXEC ]] || die "say what to do with a package: --to DIR, --extract DIR and/or --exec CMD"
	elif [[ ! -f $R$CONF ]]; then
		die "no $CONF yet: give --trust KEY and --to, --extract or --exec"
	fi
	local src
	src=$(find_binary)
	"$src" version >/dev/null 2>&1 || die "$src does not run here: is it the build for $(uname -m)?"

	install -d -m 0755 "$R$PREFIX/bin" "$R$(dirname "$MAN")" "$R$(dirname "$UNIT")"
	install -d -m 0755 "$R$ETC"
	install -d -m 0700 "$R$STATE"
	install -m 0755 "$src" "$R$BIN.new"
	mv -f "$R$BIN.new" "$R$BIN"
	say "installed $BIN ($("$R$BIN" version | head -n 1))"
	"$R$BIN" man >"$R$MAN"
	local c
	for c in "${COMPLETIONS[@]}"; do
		install -d -m 0755 "$R$(dirname "${c#*:}")"
		"$R$BIN" completion "${c%%:*}" >"$R${c#*:}"
	done

	if [[ -n $CONFIG_GIVEN ]]; then
		[[ -n $SECRET ]] && install -m 0600 "$SECRET" "$R$ETC/fleet.secret"
		if [[ -f $R$CONF ]]; then
			cp -p "$R$CONF" "$R$CONF.bak"
			say "kept the old config as $CONF.bak"
		fi
		write_config "$R$CONF.new"
		chmod 0644 "$R$CONF.new"
		mv -f "$R$CONF.new" "$R$CONF"
		say "wrote $CONF"
	else
		say "kept $CONF"
	fi
	actions_from_config
	local d
	for d in "$TO" "$EXTRACT"; do # the sandbox opens only directories that exist
		[[ -n $d ]] && install -d -m 0755 "$R$d"
	done
	unit >"$R$UNIT.new"
	mv -f "$R$UNIT.new" "$R$UNIT"
	say "wrote $UNIT ($([[ -n $EXEC ]] && echo "sandbox fitted to --exec" || echo "strict sandbox"))"

	if ! have_systemd; then
		say "systemd is not running here: start the agent with: systemctl enable --now treecast"
		return
	fi
	systemctl daemon-reload
	if [[ -n $START ]]; then
		systemctl enable treecast.service
		systemctl restart treecast.service
		say "treecast is running: systemctl status treecast; journalctl -u treecast"
	else
		systemctl enable treecast.service
		say "enabled; start it with: systemctl start treecast"
	fi
}

do_uninstall() {
	[[ -n $ROOT_DIR || $EUID -eq 0 ]] || die "removing a service needs root: sudo bash $0 --uninstall"
	if have_systemd; then
		systemctl disable --now treecast.service 2>/dev/null || true
	fi
	local c paths=("$UNIT" "$BIN" "$MAN")
	for c in "${COMPLETIONS[@]}"; do
		paths+=("${c#*:}")
	done
	rm -f "${paths[@]/#/$R}"
	have_systemd && systemctl daemon-reload
	if [[ -n $PURGE ]]; then
		rm -rf "$R$ETC" "$R$STATE"
		say "removed treecast, its config $ETC and state $STATE"
	else
		say "removed treecast; kept its config $ETC and state $STATE (--purge removes them)"
	fi
}

case $ACTION in
install) do_install ;;
uninstall) do_uninstall ;;
print-unit)
	check_dir --to "$TO"
	check_dir --extract "$EXTRACT"
	actions_from_config
	unit
	;;
esac
