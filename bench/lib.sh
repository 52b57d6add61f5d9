# bench/lib.sh — shared by the benchmark scripts under bench/ (sourced, not run).
#
# Sources scripts/lib.sh (so sweety_stack_start/stop, sweety_pg_start/stop, pg_as_owner, PG_BIN,
# log are there) and adds:
#
#   bench_args "$@"          parses --quick (sets BENCH_QUICK=1) and --help (prints the script's
#                            header comment); unknown arguments are an error
#   bench_pick QUICK FULL    echoes QUICK in quick mode, else FULL
#   bench_build              makes sure $BENCH_BUILD holds built binaries: bench/run exports it
#                            already built; a script run alone builds $SWEETY_ROOT/build-bench
#   bench_need CMD PKG...    installs the Debian packages PKG... when the command CMD is missing
#   bench_port               a free TCP port on 127.0.0.1 (random in 20000..59999)
#   bench_workdir VAR        makes a private folder under /tmp, names it in VAR
#   bench_param NAME VALUE   prints "  NAME = VALUE" and records it in BENCH_PARAMS (a JSON object,
#                            numbers stay numbers) for the result line
#   bench_result K=V K:=JSON ...
#                            one JSON object from its arguments: K=V gives a string, K:=JSON a raw
#                            JSON value (number, true/false, object, null); printed on stdout as
#                            "result: {...}" and appended as one line to $BENCH_RESULTS when set.
#                            params defaults to $BENCH_PARAMS. Example:
#                              bench_result id:=1 figure="bookings/s" value:=1234.5 unit=bookings/s \
#                                reference:=2000 ref_unit=tx/s ref_name="pgbench" ratio:=0.617 \
#                                target="≥ 70 % of pgbench" met:=false extra:='{"errors":0}'
#   bench_ratio A B          A / B with 4 decimals (0 when B is 0 or empty)
#   bench_ge A B             true (exit 0) when A >= B, numerically
#   bench_cpu_ticks PID / bench_cluster_ticks PGDIR
#                            CPU time (clock ticks) of a process / of a sweety_pg_start cluster
#   bench_machine_json       the machine as JSON (cores, memory, kernel, cpu, postgresql, os)
#   bench_wrk OUT LUA URL ARGS...
#                            runs wrk with the Lua script bench/LUA (which loads bench/wrk_report.lua)
#                            and ARGS (-c, -t, -d ...); wrk's own text goes to the terminal, its
#                            summary as JSON to the file OUT: requests, duration_s, rps, bytes,
#                            errors {connect,read,write,status,timeout}, latency_us {mean,p50,p90,
#                            p99,max}, statuses {"201":n, ...} when the script counts them.
#
# Conventions for a benchmark script: `set -euo pipefail`, source this file, bench_args "$@",
# print its parameters with bench_param before the load, print its figures, call bench_result once
# per figure. Stop what it started in an EXIT trap. Every load is bounded (wrk -d, pgbench -T).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib.sh
. "$BENCH_DIR/../scripts/lib.sh"

BENCH_QUICK=${BENCH_QUICK:-0}
BENCH_PARAMS='{}'

bench_args() {
  local a
  for a in "$@"; do
    case $a in
      --quick) BENCH_QUICK=1 ;;
      -h|--help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0 ;;
      *) echo "$(basename "$0"): unknown argument $a (only --quick)" >&2; exit 2 ;;
    esac
  done
  export BENCH_QUICK
}

bench_pick() { if [ "$BENCH_QUICK" = 1 ]; then echo "$1"; else echo "$2"; fi; }

bench_build() {
  if [ -z "${BENCH_BUILD:-}" ]; then
    BENCH_BUILD=$SWEETY_ROOT/build-bench
    sweety_build "$BENCH_BUILD"
  fi
  [ -x "$BENCH_BUILD/cmd/sweetyd" ] || { echo "no sweetyd in $BENCH_BUILD/cmd" >&2; return 1; }
  export BENCH_BUILD
}

bench_need() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$cmd is missing (install: $*)" >&2
    return 1
  fi
  log "installing: $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
  command -v "$cmd" >/dev/null 2>&1
}

bench_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    # Nothing listening there (a connect is refused), and nothing bound to it either.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null \
       && [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
      echo "$p"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

bench_workdir() {
  local d
  d=$(mktemp -d /tmp/sweety-bench-XXXXXX)
  printf -v "$1" '%s' "$d"
}

bench_param() {
  local name=$1 value=$2
  printf '  %-22s = %s\n' "$name" "$value"
  if [[ $value =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then
    BENCH_PARAMS=$(jq -c --arg k "$name" --argjson v "$value" '. + {($k): $v}' <<<"$BENCH_PARAMS")
  else
    BENCH_PARAMS=$(jq -c --arg k "$name" --arg v "$value" '. + {($k): $v}' <<<"$BENCH_PARAMS")
  fi
}

bench_result() {
  local args=() kv k v has_params=0
  for kv in "$@"; do
    if [[ $kv == *:=* && ${kv%%:=*} != *=* ]]; then
      k=${kv%%:=*} v=${kv#*:=}
      args+=(--argjson "$k" "$v")
    else
      k=${kv%%=*} v=${kv#*=}
      args+=(--arg "$k" "$v")
    fi
    [ "$k" = params ] && has_params=1
  done
  [ $has_params = 1 ] || args+=(--argjson params "$BENCH_PARAMS")
  local line
  line=$(jq -cn "${args[@]}" '$ARGS.named') || { echo "bench_result: bad arguments" >&2; return 1; }
  echo "result: $line"
  if [ -n "${BENCH_RESULTS:-}" ]; then
    printf '%s\n' "$line" >>"$BENCH_RESULTS"
  fi
}

bench_ratio() {
  awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b + 0 == 0) print 0; else printf "%.4f\n", a / b }'
}

bench_ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

bench_wrk() {
  local out=$1 lua=$2 url=$3; shift 3
  rm -f "$out"
  BENCH_WRK_JSON=$out BENCH_DIR=$BENCH_DIR wrk -s "$BENCH_DIR/$lua" "$@" "$url"
  [ -s "$out" ] || { echo "wrk wrote no summary" >&2; return 1; }
}

# CPU time used so far, in clock ticks (getconf CLK_TCK a second): bench_cpu_ticks PID for one
# process (all its threads); bench_cluster_ticks PGDIR for a PostgreSQL cluster started by
# sweety_pg_start PGDIR (the postmaster, the children it reaped, and its live children), so a
# difference of two readings is what the cluster spent in between, backends that ended included.
# On a machine shared with other work, CPU time per operation holds better than operations per
# second.
bench_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
bench_cluster_ticks() {
  local pm c total
  pm=$(head -1 "$1/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat" 2>/dev/null || echo 0)
  for c in $(ps --ppid "$pm" -o pid= 2>/dev/null); do
    total=$(( total + $(bench_cpu_ticks "$c") ))
  done
  echo "$total"
}

# The machine, as JSON (bench/run puts it in the report): cores, memory, kernel, CPU model,
# PostgreSQL version.
bench_machine_json() {
  local cpu mem pgv
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  pgv=$("$PG_BIN/postgres" --version 2>/dev/null | sed 's/^postgres (PostgreSQL) //')
  jq -cn --arg cores "$(nproc)" --arg mem "$mem" --arg kernel "$(uname -sr)" --arg cpu "${cpu:-unknown}" \
    --arg pg "${pgv:-unknown}" --arg os "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")" \
    '{cores: ($cores | tonumber), memory: $mem, kernel: $kernel, cpu: $cpu, postgresql: $pg, os: $os}'
}
