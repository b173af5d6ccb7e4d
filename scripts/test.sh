#!/usr/bin/env bash
# test.sh - the whole test suite: go vet, go test -race, the service unit
# and installer (scripts/service_test.sh: systemd-analyze verify), every
# release target (scripts/release.sh, SHA256SUMS checked), then on the
# emulated LAN (needs root) the end-to-end test (scripts/e2e.sh), a fleet
# over two subnets (scripts/subnets.sh), the README's walkthroughs as written
# (scripts/readme_test.sh), the attacks (scripts/security.sh), a slow link
# (scripts/links.sh), a disk image written in place (scripts/image.sh) and
# the faults (scripts/faults.sh). Every part runs
# even if an earlier one failed; exits 1 if any failed. Fuzzing is
# scripts/fuzz.sh. Installs what it needs first (scripts/setup.sh).
#
# Ends with one line "N passed, N failed": Go tests (and subtests) + go vet +
# the service, release and e2e checks.
# Env: GO_TEST_TIMEOUT (10m), SKIP_E2E=1 (unit tests only), SKIP_FAULTS=1
#      (no fault-injection runs, which take a few minutes).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH=/usr/local/go/bin:$PATH
bash "$ROOT/scripts/setup.sh"
LOGDIR=$ROOT/scripts/out/test-$$
mkdir -p "$LOGDIR"
trap 'rm -rf "$LOGDIR"' EXIT

passed=0
failed=0
broken=()

echo "== gofmt -l ."
unformatted=$(gofmt -l . | grep -v '^scripts/out/' || true)
if [[ -z $unformatted ]]; then
	echo "PASS: gofmt"
	passed=$((passed + 1))
else
	echo "FAIL: gofmt: not formatted: $unformatted"
	failed=$((failed + 1))
	broken+=("gofmt")
fi

echo
echo "== go vet ./..."
if go vet ./...; then
	echo "PASS: go vet"
	passed=$((passed + 1))
else
	echo "FAIL: go vet"
	failed=$((failed + 1))
	broken+=("go vet")
fi

echo
echo "== go test -race -count=1 ./..."
rc=0
timeout -k 30 "${GO_TEST_TIMEOUT:-10m}" go test -race -count=1 -v -timeout "${GO_TEST_TIMEOUT:-10m}" ./... >"$LOGDIR/go-test.log" 2>&1 || rc=$?
# The package lines and any failure, not every RUN/PASS line.
grep -E '^(ok|FAIL|panic:|\?)|^\s*--- FAIL' "$LOGDIR/go-test.log" || true
gp=$(grep -cE '^\s*--- PASS' "$LOGDIR/go-test.log" || true)
gf=$(grep -cE '^\s*--- FAIL' "$LOGDIR/go-test.log" || true)
passed=$((passed + gp))
failed=$((failed + gf))
if ((rc != 0)); then
	# A build failure, panic or timeout fails no single test: count it once.
	((gf > 0)) || failed=$((failed + 1))
	broken+=("go test (exit $rc)")
	echo "-- go test failed (exit $rc); last lines of its output:"
	tail -n 150 "$LOGDIR/go-test.log"
fi
echo "go test: $gp passed, $gf failed (tests and subtests)"

# lab NAME TIMEOUT: runs scripts/NAME.sh (on the LAN lab, for most) and adds
# its counts.
lab() {
	local name=$1 limit=$2 rc=0 line ep ef
	echo
	echo "== scripts/$name.sh"
	timeout -k 30 "$limit" bash "$ROOT/scripts/$name.sh" 2>&1 | tee "$LOGDIR/$name.log" || rc=$?
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGDIR/$name.log" | tail -n 1 || true)
	if [[ -n $line ]]; then
		ep=${line%% passed*}
		ef=${line#*passed, }
		ef=${ef%% failed*}
		passed=$((passed + ep))
		failed=$((failed + ef))
		((ef == 0 && rc != 0)) && failed=$((failed + 1))
	else
		failed=$((failed + 1))
	fi
	((rc == 0)) || broken+=("$name (exit $rc)")
}

# The service install.sh sets up: systemd-analyze verify on its unit, and
# install/uninstall into a scratch root.
lab service_test 5m

# Every release target builds, and SHA256SUMS matches (release.sh checks it,
# and the binaries, itself; so does this).
echo
echo "== scripts/release.sh (every release target)"
rc=0
timeout -k 30 15m bash "$ROOT/scripts/release.sh" "$LOGDIR/release" >"$LOGDIR/release.log" 2>&1 || rc=$?
grep -E '^release.sh: (ok|FAILED)' "$LOGDIR/release.log" || true
if ((rc == 0)) && (cd "$LOGDIR/release" && sha256sum --check --quiet --strict SHA256SUMS); then
	bins=("$LOGDIR"/release/treecast-*)
	echo "PASS: release: ${#bins[@]} binaries built, SHA256SUMS checked"
	passed=$((passed + 1))
else
	echo "FAIL: release (exit $rc); last lines of its output:"
	tail -n 30 "$LOGDIR/release.log"
	failed=$((failed + 1))
	broken+=("release (exit $rc)")
fi
rm -rf "$LOGDIR/release"

if [[ -z ${SKIP_E2E:-} ]]; then
	lab e2e 15m
	lab subnets 3m
	lab readme_test 3m
	lab security 10m
	lab links 5m
	lab image 5m
	[[ -n ${SKIP_FAULTS:-} ]] || lab faults 15m
fi

echo
if ((${#broken[@]})); then
	echo "test.sh: FAILED: ${broken[*]}"
else
	echo "test.sh: all green"
fi
echo "$passed passed, $failed failed"
((${#broken[@]} == 0 && failed == 0))
