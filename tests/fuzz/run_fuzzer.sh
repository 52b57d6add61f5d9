#!/usr/bin/env bash
# tests/fuzz/run_fuzzer.sh — one fuzz test, as ctest (and so scripts/fuzz) runs it:
#   run_fuzzer.sh FUZZER NAME SRC_DIR WORK SECONDS [GEN_SEEDS]
# FUZZER: the libFuzzer binary; NAME: its target name (corpus/NAME, NAME.dict); SRC_DIR:
# tests/fuzz; WORK: a folder of the build tree it owns (emptied first); SECONDS: how long to fuzz,
# unless $FUZZ_SECONDS says otherwise; GEN_SEEDS: fuzz_gen_seeds, which adds the seeds made by the
# project's code for the targets that have some.
#
# 1. Copies SRC_DIR/corpus/NAME to WORK/corpus: the repository's corpus is never written.
# 2. Regression: runs every input of that copy once, without mutation (-runs=0).
# 3. Fuzzes the copy for SECONDS (-max_total_time), -timeout=10 per input, -rss_limit_mb=2048.
# A crash, leak, timeout or out-of-memory fails the test; the input that caused it is left in
# WORK/artifacts and its path printed. WORK/summary gets one line for scripts/fuzz.
set -uo pipefail

if [ $# -lt 5 ]; then
  echo "usage: $0 FUZZER NAME SRC_DIR WORK SECONDS [GEN_SEEDS]" >&2
  exit 2
fi
fuzzer=$1 name=$2 src=$3 work=$4 seconds=${FUZZ_SECONDS:-$5} gen=${6:-}
case $seconds in '' | *[!0-9]*) echo "FUZZ_SECONDS must be a whole number of seconds, got '$seconds'" >&2; exit 2 ;; esac

corpus_src=$src/corpus/$name
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
if [ -d "$corpus_src" ]; then
  cp -R "$corpus_src/." "$work/corpus/"
fi
case $name in
  bus_decode | ws_frame)
    if [ -n "$gen" ]; then "$gen" "$name" "$work/corpus" || { echo "$name: fuzz_gen_seeds failed" >&2; exit 1; }; fi ;;
esac
seeds=$(find "$work/corpus" -type f | wc -l)

# Our own sanitizer settings, whatever the caller exported: leaks are findings, UB stops the run.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
unset LSAN_OPTIONS

opts=(-timeout=10 -rss_limit_mb=2048 "-artifact_prefix=$work/artifacts/")
[ -f "$src/$name.dict" ] && opts+=("-dict=$src/$name.dict")

# Prints the status line fields of a libFuzzer log: "cov ft corp exec/s".
stats() {
  awk '/^#[0-9]+/ && / cov: / {
         cov = ft = corp = eps = "-"
         for (i = 1; i < NF; i++) {
           if ($i == "cov:") cov = $(i + 1); else if ($i == "ft:") ft = $(i + 1)
           else if ($i == "corp:") corp = $(i + 1); else if ($i == "exec/s:") eps = $(i + 1)
         }
         last = cov " " ft " " corp " " eps
       }
       END { print (last == "" ? "- - - -" : last) }' "$1"
}

report_crash() {
  local phase=$1 log=$2 crash="" f
  echo "---- $name: $phase failed; the end of $log:"
  tail -n 60 "$log"
  for f in "$work"/artifacts/*; do
    [ -f "$f" ] || continue
    crash=$f
    echo "$name: CRASH INPUT: $f"
  done
  if [ -n "$crash" ]; then
    echo "$name: reproduce with: $fuzzer $crash"
  else
    echo "$name: no input was left in $work/artifacts (see the log above)"
  fi
  printf '%s FAIL %s %s - - - - - %s\n' "$name" "$seconds" "$seeds" "${crash:--}" >"$work/summary"
}

# 2. The corpus as it is: every input once.
if ! timeout -k 10 600 "$fuzzer" "${opts[@]}" -runs=0 "$work/corpus" >"$work/regress.log" 2>&1; then
  report_crash "regression run of the corpus" "$work/regress.log"
  exit 1
fi
read -r seed_cov _ <<<"$(stats "$work/regress.log")"

# 3. Fuzzing.
if ! timeout -k 10 $((seconds + 300)) "$fuzzer" "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    "$work/corpus" >"$work/fuzz.log" 2>&1; then
  report_crash "fuzzing" "$work/fuzz.log"
  exit 1
fi
read -r cov ft corp eps <<<"$(stats "$work/fuzz.log")"
execs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "$work/fuzz.log")
after=$(find "$work/corpus" -type f | wc -l)
printf '%s PASS %s %s %s %s %s %s %s %s\n' "$name" "$seconds" "$seeds" "$after" "$seed_cov" "$cov" "${eps}" \
  "${execs:--}" - >"$work/summary"
echo "$name: ok — ${seconds}s, corpus $seeds -> $after inputs, cov $seed_cov -> $cov, ft $ft, $eps exec/s, ${execs:-?} runs"
