#!/usr/bin/env bash
# service_test.sh - checks scripts/install.sh without touching this machine:
# `systemd-analyze verify` on the unit it writes, with a strict sandbox (no
# --exec) and with the sandbox fitted to --exec; then an install into a
# scratch root (--root), a re-run that keeps the config and refits the unit,
# --uninstall (config and state kept) and --uninstall --purge.
#
# Prints PASS/FAIL per check and ends with "N passed, N failed"; exits 1 if
# any check failed. Env: SERVICE_BIN (use this treecast binary, else build one).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH=/usr/local/go/bin:$PATH
INSTALL=$ROOT/scripts/install.sh
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
pass() {
	printf 'PASS: %s\n' "$*"
	PASSED=$((PASSED + 1))
}
fail() {
	printf 'FAIL: %s\n' "$*"
	FAILED=$((FAILED + 1))
}
# check NAME CMD...: PASS if CMD succeeds; its output shows on failure.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then pass "$name"; else fail "$name"; printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'; fi
}

BIN=${SERVICE_BIN:-}
if [[ -z $BIN ]]; then
	BIN=$WORK/treecast
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" .)
fi

# verify NAME OPTIONS...: the unit install.sh writes for OPTIONS passes
# systemd-analyze verify without a word. The unit names PREFIX/bin/treecast,
# which verify requires to exist.
verify() {
	local name=$1 out rc=0
	shift
	mkdir -p "$WORK/prefix/bin" "$WORK/units"
	cp "$BIN" "$WORK/prefix/bin/treecast"
	bash "$INSTALL" --print-unit --prefix "$WORK/prefix" "$@" >"$WORK/units/treecast.service"
	out=$(systemd-analyze verify --man=no "$WORK/units/treecast.service" 2>&1) || rc=$?
	if ((rc == 0)) && [[ -z $out ]]; then
		pass "systemd-analyze verify: $name"
	else
		fail "systemd-analyze verify: $name (exit $rc)"
		printf '%s\n' "$out" | sed 's/^/    /'
	fi
	if score=$(systemd-analyze security --offline=yes "$WORK/units/treecast.service" 2>/dev/null | grep -o 'exposure level.*'); then
		echo "    systemd-analyze security: $score"
	fi
}

if command -v systemd-analyze >/dev/null; then
	verify "strict sandbox (--to, --extract)" --to /srv/pkg --extract /opt/app
	verify "sandbox fitted to --exec" --extract /opt/app --exec 'systemctl restart app'
	verify "--extract under /home" --extract /home/app/current
else
	fail "systemd-analyze is not installed (scripts/setup.sh installs systemd)"
fi

# An install into a scratch root.
R=$WORK/root
files=(usr/local/bin/treecast usr/local/share/man/man1/treecast.1
	usr/local/share/bash-completion/completions/treecast
	usr/local/share/zsh/site-functions/_treecast
	usr/local/share/fish/vendor_completions.d/treecast.fish
	etc/systemd/system/treecast.service)
all_there() {
	local f
	for f in "${files[@]}" "$@"; do
		[[ -s $R/$f ]] || { echo "missing $f"; return 1; }
	done
}
none_there() {
	local f
	for f in "${files[@]}"; do
		[[ ! -e $R/$f ]] || { echo "left $f"; return 1; }
	done
}
exec_cmd='printf "%s\n" "$TREECAST_FILE" >>/var/log/app-updates \ # a "quoted" \path'

check "install.sh refuses a new config without --trust (exit 2), installing nothing" \
	bash -c 'bash "$1" --root "$2" --binary "$3" --extract /opt/app; (( $? == 2 )) && [[ ! -e $2 ]]' _ "$INSTALL" "$R" "$BIN"
check "install.sh --root: binary, man page, completions, config, unit" \
	bash "$INSTALL" --root "$R" --binary "$BIN" --trust 3f9a-77c2-19ab-e0d4 --group line2 --extract /opt/app
check "  every file is there" all_there etc/treecast/config.toml
check "  the config says what was asked" grep -qx 'extract = "/opt/app"' "$R/etc/treecast/config.toml"
check "  the unit has the strict sandbox, /opt/app writable" \
	grep -qx 'ReadWritePaths="/opt/app"' "$R/etc/systemd/system/treecast.service"
check "  the installed man page and completions come from the binary" \
	cmp -s "$R/usr/local/share/man/man1/treecast.1" <("$BIN" man)

check "install.sh --root with --exec: config rewritten, old one kept as .bak" \
	bash "$INSTALL" --root "$R" --binary "$BIN" --trust 3f9a-77c2-19ab-e0d4 --to /srv/pkg --exec "$exec_cmd"
check "  config.toml.bak holds the old --extract" grep -qx 'extract = "/opt/app"' "$R/etc/treecast/config.toml.bak"
check "  the unit is fitted to --exec (no ProtectSystem)" \
	bash -c '! grep -q ^ProtectSystem "$1" && grep -q ^PrivateTmp=yes "$1"' _ "$R/etc/systemd/system/treecast.service"
check "  --print-unit reads the --exec back from the config" \
	bash -c '! bash "$1" --print-unit --root "$2" | grep -q ^ProtectSystem' _ "$INSTALL" "$R"
if command -v python3 >/dev/null && python3 -c 'import tomllib' 2>/dev/null; then
	check "  the config is valid TOML and holds the command as given" python3 -c '
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
assert c["install"]["exec"] == sys.argv[2], c["install"]["exec"]
assert c["install"]["to"] == "/srv/pkg" and c["receiver"]["trust"] == ["3f9a-77c2-19ab-e0d4"]
' "$R/etc/treecast/config.toml" "$exec_cmd"
fi

check "install.sh --root again without options: config kept, unit refit from it" \
	bash -c 'bash "$1" --root "$2" --binary "$3" | grep -q "kept /etc/treecast/config.toml" && ! grep -q ^ProtectSystem "$2/etc/systemd/system/treecast.service"' _ "$INSTALL" "$R" "$BIN"

check "install.sh --uninstall: the service and its files go" bash "$INSTALL" --root "$R" --uninstall
check "  nothing installed is left" none_there
check "  config and state are kept" test -f "$R/etc/treecast/config.toml" -a -d "$R/var/lib/treecast"
check "install.sh --uninstall --purge: config and state go too" bash "$INSTALL" --root "$R" --uninstall --purge
check "  no config, no state" test ! -e "$R/etc/treecast" -a ! -e "$R/var/lib/treecast"

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
