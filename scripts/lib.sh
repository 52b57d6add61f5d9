# scripts/lib.sh — shared by scripts/test and scripts/demo (sourced, not run).
# Installs what is missing, builds, and runs a private PostgreSQL cluster.

SWEETY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${SWEETY_PG_BIN:-/usr/lib/postgresql/15/bin}

# Debian packages the project needs to build, test and run its demo.
SWEETY_PACKAGES=(build-essential cmake pkg-config git ca-certificates curl openssl
  libzmq3-dev libczmq-dev libpq-dev libcurl4-openssl-dev libmsgpack-dev libwebsockets-dev
  libjansson-dev libssl-dev libcmocka-dev postgresql postgresql-contrib chromium)

log() { printf '==> %s\n' "$*" >&2; }

sweety_install_deps() {
  local missing=()
  for p in "${SWEETY_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Node.js and npm (the fonts of the pages, playwright-core for the browser tests): Debian's,
  # unless the machine already has a node with npm (another package may provide both).
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  if [ ${#missing[@]} -eq 0 ]; then
    log "all packages present"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages (run as root to install): ${missing[*]}" >&2
    return 1
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The pages' typefaces from npm (@fontsource, copied into web/assets/fonts by scripts/web-assets).
sweety_web_assets() {
  log "web assets (fonts from npm)"
  "$SWEETY_ROOT/scripts/web-assets"
}

# playwright-core for the browser tests (it drives Debian's chromium; it downloads no browser).
sweety_browser_deps() {
  log "browser test dependencies (npm ci in tests/browser)"
  (cd "$SWEETY_ROOT/tests/browser" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

# sweety_build DIR [extra cmake args...]
sweety_build() {
  local dir=$1; shift
  log "building in $dir"
  cmake -S "$SWEETY_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc)" -- --no-print-directory >/dev/null
}

# Runs a PostgreSQL tool as the unprivileged postgres user when we are root (PostgreSQL refuses
# to run as root).
pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# sweety_pg_start DIR — a private cluster in DIR (created), unix socket in DIR, no TCP.
# Exports SWEETY_TEST_PG_HOST/PORT/USER/BIN for the tests.
sweety_pg_start() {
  local dir=$1
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  local port=$(( 20000 + RANDOM % 20000 ))
  log "starting PostgreSQL in $dir (socket port $port)"
  pg_as_owner "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
    -o "-k $dir -p $port -c listen_addresses='' -c fsync=off -c max_connections=300" start >/dev/null \
    || { cat "$dir/postgres.log" >&2; return 1; }
  export SWEETY_TEST_PG_HOST=$dir SWEETY_TEST_PG_PORT=$port SWEETY_TEST_PG_USER=postgres SWEETY_TEST_PG_BIN=$PG_BIN
}

sweety_pg_stop() {
  local dir=$1
  [ -d "$dir/data" ] && pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
  rm -rf "$dir"
}
