#!/usr/bin/env bash
# release.sh - builds a treecast release into OUT (default scripts/out/release):
#
#   treecast-linux-amd64  treecast-linux-arm64  treecast-linux-armv7 (Raspberry Pi)
#   treecast-darwin-arm64 treecast-darwin-amd64 treecast-windows-amd64.exe
#   treecast.1 (man page), completions/{treecast.bash,_treecast,treecast.fish},
#   install.sh (the Linux service installer), SHA256SUMS of all of them.
#
# Binaries are built without cgo (static on Linux; on macOS and Windows they
# link only the system's libSystem or kernel32), stripped (-s -w), reproducible
# (-trimpath, no build id, the commit's own date: the same commit gives
# the same bytes). `treecast version` prints the version, commit and date
# embedded with -ldflags -X. Then it checks what it built: every file
# against SHA256SUMS, every binary for its OS and architecture and without a
# symbol table, the host's binary prints the version, and exits 1 if any
# check failed.
#
#   bash scripts/release.sh [OUT]
# Env: VERSION (default: `git describe --tags --match 'v[0-9]*' --dirty`,
#      else a Go pseudo-version, v0.0.0-YYYYMMDDhhmmss-COMMIT12[+dirty]).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH=/usr/local/go/bin:$PATH
OUT=${1:-$ROOT/scripts/out/release}
TARGETS=(linux/amd64 linux/arm64 linux/armv7 darwin/arm64 darwin/amd64 windows/amd64)

# What is built: the commit, its date (UTC), and the version.
if commit=$(git rev-parse HEAD 2>/dev/null); then
	date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ)
	dirty=
	[[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || dirty=+dirty
	stamp=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S)
	VERSION=${VERSION:-$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo "v0.0.0-$stamp-${commit:0:12}$dirty")}
else
	commit=unknown
	date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	VERSION=${VERSION:-v0.0.0-dev}
fi
LDFLAGS="-s -w -buildid= -X main.version=$VERSION -X main.commit=$commit -X main.date=$date"
echo "release.sh: treecast $VERSION (commit $commit, $date) into $OUT"

# OUT is replaced only if it is empty or an earlier release.
if [[ -d $OUT && -n $(ls -A "$OUT") && ! -f $OUT/SHA256SUMS ]]; then
	echo "release.sh: $OUT holds files but no SHA256SUMS: not a release to replace; give an empty or new folder" >&2
	exit 2
fi
rm -rf "$OUT"
mkdir -p "$OUT/completions"

# name OS ARCH: the binary's file name.
name() {
	local n=treecast-$1-$2
	[[ $1 == windows ]] && n+=.exe
	echo "$n"
}

for t in "${TARGETS[@]}"; do
	os=${t%/*} arch=${t#*/} goarch=${t#*/} goarm=
	if [[ $arch == armv7 ]]; then goarch=arm goarm=7; fi
	echo "release.sh: building $(name "$os" "$arch")"
	CGO_ENABLED=0 GOOS=$os GOARCH=$goarch GOARM=$goarm \
		go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o "$OUT/$(name "$os" "$arch")" .
done

# The man page and completions come from the host's own build of the same
# source, run here.
host="$OUT/.host/treecast"
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o "$host" .
"$host" man >"$OUT/treecast.1"
"$host" completion bash >"$OUT/completions/treecast.bash"
"$host" completion zsh >"$OUT/completions/_treecast"
"$host" completion fish >"$OUT/completions/treecast.fish"
install -m 0755 scripts/install.sh "$OUT/install.sh"

(cd "$OUT" && find . -path ./.host -prune -o -type f ! -name SHA256SUMS -print | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)

# --- checks ---------------------------------------------------------------
bad=0
ok() { echo "release.sh: ok: $*"; }
notok() {
	echo "release.sh: FAILED: $*"
	bad=$((bad + 1))
}

if (cd "$OUT" && sha256sum --check --quiet --strict SHA256SUMS); then
	ok "SHA256SUMS: $(wc -l <"$OUT/SHA256SUMS") files match"
else
	notok "SHA256SUMS does not match the files"
fi
for t in "${TARGETS[@]}"; do
	os=${t%/*} arch=${t#*/} goarch=${t#*/}
	[[ $arch == armv7 ]] && goarch=arm
	f=$OUT/$(name "$os" "$arch")
	info=$(go version -m "$f")
	want=("GOOS=$os" "GOARCH=$goarch" "CGO_ENABLED=0")
	[[ $arch == armv7 ]] && want+=("GOARM=7")
	missing=
	for w in "${want[@]}"; do
		grep -qF -- "$w" <<<"$info" || missing+=" $w"
	done
	# -trimpath keeps -ldflags out of the build info: look for the strings.
	grep -qaF -- "$VERSION" "$f" || missing+=" version"
	grep -qaF -- "$commit" "$f" || missing+=" commit"
	# Stripped: no Go symbols (a Mach-O file keeps its dynamic imports).
	if go tool nm "$f" 2>/dev/null | grep -q ' main\.main$'; then
		missing+=" stripped"
	fi
	if [[ -z $missing ]]; then
		ok "$(name "$os" "$arch"): $os/$arch, no cgo, stripped, $VERSION, $(du -h "$f" | cut -f1)"
	else
		notok "$(name "$os" "$arch") lacks:$missing"
	fi
done
if got=$("$host" version) && [[ $got == "treecast $VERSION (commit ${commit:0:12}"* ]]; then
	ok "the host's binary says: $got"
else
	notok "the host's binary says \"${got:-}\", want treecast $VERSION (commit ${commit:0:12}, ...)"
fi
rm -rf "$OUT/.host"

if ((bad)); then
	echo "release.sh: $bad checks FAILED"
	exit 1
fi
echo "release.sh: $VERSION in $OUT"
