#!/usr/bin/env bash
# The README's test command, cold (an empty compilation cache, as on a
# fresh machine), with every Python process's compile time and every
# test's time recorded; prints one JSON object (report.py) and leaves the
# records in OUTDIR. docs/testing.md, "The suite's time", quotes it.
#
#   bash benchmarks/suite_time/run.sh [OUTDIR] [PYTEST_ARGS...]
set -euo pipefail
out=${1:-suite_time_records}
shift || true
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cache=$(mktemp -d)
SUITE_TIME_DIR="$out" JAX_COMPILATION_CACHE_DIR="$cache" \
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
  /usr/bin/time -o "$out/time.json" \
  -f '{"wall_s": %e, "user_s": %U, "sys_s": %S}' \
  python -m pytest -p tests_seen "$@" > "$out/pytest.log" 2>&1 || {
    tail -20 "$out/pytest.log" >&2
    exit 1
  }
rm -rf "$cache"
python "$here/report.py" "$out"
