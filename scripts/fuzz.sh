#!/usr/bin/env bash
# fuzz.sh - runs every Fuzz* target in the module for a while each and
# reports executions and findings.
#
#   scripts/fuzz.sh            # 30s per target
#   scripts/fuzz.sh 5m         # 5 minutes per target
#   FUZZ_MATCH=Frame scripts/fuzz.sh 1m   # only targets whose name matches
#
# Targets are found with `go test -list 'Fuzz.*' ./...`. A finding is written
# by Go to PKG/testdata/fuzz/FuzzX/<hash>: keep it, it becomes a regression
# test case. Exits 1 if any target found a failing input or did not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Extraction fsyncs every file it writes: on a disk that caps FuzzExtract at
# a few executions a second, on tmpfs it costs nothing.
if [[ -z ${TMPDIR:-} && -d /dev/shm && -w /dev/shm ]]; then
	export TMPDIR=/dev/shm
fi
cd "$ROOT"
FUZZTIME=${1:-${FUZZTIME:-30s}}
MATCH=${FUZZ_MATCH:-}
LOGDIR=$(mktemp -d)
# dur_secs 30s|5m|1h|1000x -> seconds to allow (an -fuzztime in runs: an hour)
dur_secs() {
	case $1 in
	*h) echo $((${1%h} * 3600)) ;;
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	*x) echo 3600 ;;
	*) echo "$1" ;;
	esac
}
trap 'rm -rf "$LOGDIR"' EXIT

# "pkg name" pairs: `go test -list` prints a package's names, then its "ok" line.
targets=()
names=()
while IFS= read -r line; do
	if [[ $line =~ ^Fuzz[A-Za-z0-9_]*$ ]]; then
		names+=("$line")
	elif [[ $line =~ ^ok[[:space:]]+([^[:space:]]+) ]]; then
		for n in "${names[@]}"; do targets+=("${BASH_REMATCH[1]} $n"); done
		names=()
	elif [[ $line =~ ^(FAIL|panic) ]]; then
		echo "fuzz.sh: listing fuzz targets failed: $line" >&2
		exit 1
	else
		names=()
	fi
done < <(go test -list '^Fuzz' ./... 2>&1)

if [[ -n $MATCH ]]; then
	sel=()
	for t in "${targets[@]}"; do [[ ${t#* } == *"$MATCH"* ]] && sel+=("$t"); done
	targets=("${sel[@]}")
fi
((${#targets[@]})) || { echo "fuzz.sh: no Fuzz targets found${MATCH:+ matching $MATCH}"; exit 1; }
echo "fuzz.sh: ${#targets[@]} targets, $FUZZTIME each"

bad=0
summary=()
for t in "${targets[@]}"; do
	pkg=${t% *} name=${t#* }
	log=$LOGDIR/$name.log
	short=${pkg#github.com/treecast/treecast}
	short=${short#/}
	echo
	echo "== $name (${short:-.})"
	rc=0
	# The fuzz time plus room to build and minimise; -run '^$' skips unit tests.
	timeout -k 30 "$(($(dur_secs "$FUZZTIME") + 300))" \
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1 || rc=$?
	execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -n 1 | awk '{print $2}')
	interesting=$(grep -oE 'new interesting: [0-9]+' "$log" | tail -n 1 | awk '{print $3}')
	if ((rc == 0)); then
		echo "ok: ${execs:-0} executions, ${interesting:-0} new interesting inputs, no failure"
		summary+=("ok    $name  ${execs:-0} execs")
	else
		bad=$((bad + 1))
		echo "FINDING or error (exit $rc):"
		grep -E -- '--- FAIL|Failing input written|panic:|error|go test -run' "$log" | head -n 20 | sed 's/^/    /' || true
		tail -n 25 "$log" | sed 's/^/  | /'
		summary+=("FAIL  $name  ${execs:-0} execs (log above)")
	fi
done

echo
echo "== fuzz summary ($FUZZTIME per target)"
printf '%s\n' "${summary[@]}"
if ((bad)); then
	echo "fuzz.sh: $bad of ${#targets[@]} targets failed; new failing inputs are under */testdata/fuzz/ (see git status)"
	exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, no findings"
