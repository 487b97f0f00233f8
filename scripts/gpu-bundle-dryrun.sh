#!/usr/bin/env bash
# The GPU bundle's run on this machine, against the kernel emulation: what a GPU window will do,
# checked before one is spent. Copies dist/gpu-bundle/ (make gpu-bundle) to a temporary folder,
# plants a suite that hangs, runs `run.sh --device emulated` with a short budget, and checks that
#  - the run ends by its deadline (budget + a few seconds),
#  - the planted hang is cut by its cap and recorded as TIMEOUT with the test that was running,
#  - the output folder holds at most 8 files: a readable summary.txt and results.tar.gz, whose
#    listing holds every step's log.
# Steps that time out or fail under emulation (two CPU cores running GPU suites) are reported but
# do not fail the dry run; its checks are about the runner.
#
#   scripts/gpu-bundle-dryrun.sh [BUDGET_SECONDS]   (default 120; make gpu-bundle-dryrun)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
budget="${1:-120}"
bundle="$root/dist/gpu-bundle"
[ -f "$bundle/run.sh" ] || { echo "dryrun: no $bundle (make gpu-bundle)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$bundle" "$tmp/bundle"
cd "$tmp/bundle"
python3 -c 'import tarfile; tarfile.open("bin.tar.xz").extractall(".")'
cat >bin/planted_hang <<'HANG'
#!/usr/bin/env bash
echo "running 1 test"
printf 'test planted::hang ... '
exec sleep 100000
HANG
chmod +x bin/planted_hang
{ echo planted_hang; cat tests.txt; } >tests.new && mv tests.new tests.txt

failed=0
check() { # MESSAGE CONDITION...
  local what="$1"
  shift
  if "$@"; then echo "dryrun: ok: $what"; else echo "dryrun: FAILED: $what"; failed=1; fi
}

began=$(date +%s)
rc=0
KILN_RUN_SUITE_CAP="${KILN_RUN_SUITE_CAP:-20}" bash run.sh --out "$tmp/out" --budget "$budget" \
  --device emulated || rc=$?
took=$(($(date +%s) - began))
echo
echo "dryrun: run.sh exited $rc after ${took}s on a ${budget}s budget"
summary="$tmp/out/summary.txt"
check "the run ended by its deadline (${took}s <= ${budget}s + 5)" test "$took" -le $((budget + 5))
check "summary.txt is there" test -s "$summary"
check "the planted hang was cut and recorded as TIMEOUT with its test" \
  grep -qE '^tests-planted_hang +TIMEOUT .*running: planted::hang' "$summary"
check "the selftest ran on the emulation and passed" grep -qE '^selftest +PASS' "$summary"
check "the preflight ran" grep -qE '^preflight +PASS' "$summary"
files=$(find "$tmp/out" -mindepth 1 | wc -l)
check "the output folder holds at most 8 files ($files)" test "$files" -le 8
tar -tzf "$tmp/out/results.tar.gz" >"$tmp/listing"
check "results.tar.gz holds the selftest and preflight logs" grep -q 'preflight.log' "$tmp/listing"
check "results.tar.gz holds the planted suite's log" grep -q 'tests-planted_hang.log' "$tmp/listing"
check "the run summary is packed too" grep -q 'summary.txt' "$tmp/listing"
exit "$failed"
