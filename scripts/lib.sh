# scripts/lib.sh — shared by scripts/test and scripts/demo (sourced, not run).
# Installs what is missing, builds, and runs a private PostgreSQL cluster.

SWEETY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${SWEETY_PG_BIN:-/usr/lib/postgresql/15/bin}

# Debian packages the project needs to build, test and run its demo.
SWEETY_PACKAGES=(build-essential cmake pkg-config git ca-certificates curl openssl
  libzmq3-dev libczmq-dev libpq-dev libcurl4-openssl-dev libmsgpack-dev libwebsockets-dev
  libjansson-dev libssl-dev libcmocka-dev postgresql postgresql-contrib chromium jq)

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

# sweety_stack_start WORK PORT SANDBOX_PORT BIN_DIR [EXTRA_CONF]
# The whole service as a person meets it, in the folder WORK (created by the caller): a private
# PostgreSQL, the provider sandbox (Stripe, Cryptomus, VAPI as sweety-sandbox plays them; VAPI
# calls answered for 20 s unless STACK_VAPI_OUTCOME says otherwise), sweetyd on 127.0.0.1:PORT
# serving web/, a sandbox VAPI account with one agent per plan. EXTRA_CONF (text) is appended to
# sweetyd's configuration. Exports STACK_URL, STACK_SANDBOX_URL, STACK_CONF,
# STACK_DAEMON_PID, STACK_SANDBOX_PID and the SWEETY_TEST_PG_* of the cluster.
# Secrets are random and stay in WORK (mode 077). sweety_stack_stop WORK undoes it all.
sweety_stack_start() {
  local work=$1 port=$2 sb_port=$3 bin=$4 extra=${5:-}
  chmod 711 "$work"   # the postgres user must reach its cluster inside
  sweety_pg_start "$work/pg"
  pg_as_owner "$PG_BIN/createdb" -h "$work/pg" -p "$SWEETY_TEST_PG_PORT" -U postgres sweety
  local sb=http://127.0.0.1:$sb_port
  (
    umask 077
    openssl rand -base64 32 >"$work/master_key"
    openssl rand -hex 32 >"$work/token_secret"
  )
  local stripe_key=sk_test_demo_$(openssl rand -hex 8) stripe_whsec=whsec_demo_$(openssl rand -hex 16)
  local cm_merchant=$(cat /proc/sys/kernel/random/uuid) cm_key=$(openssl rand -hex 16)
  local vapi_secret=$(openssl rand -hex 16) vapi_key=vapi_demo_$(openssl rand -hex 8)
  "$bin/sweety-sandbox" --listen "127.0.0.1:$sb_port" --public-url "$sb" \
    --stripe-secret-key "$stripe_key" --stripe-webhook-secret "$stripe_whsec" \
    --stripe-webhook-url "http://127.0.0.1:$port/webhooks/stripe" \
    --cryptomus-merchant "$cm_merchant" --cryptomus-payment-key "$cm_key" \
    --vapi-webhook-secret "$vapi_secret" --vapi-key "$vapi_key:${STACK_VAPI_LIMIT:-10}" \
    --vapi-default-outcome "${STACK_VAPI_OUTCOME:-answer:20}" \
    >"$work/sandbox.out" 2>"$work/sandbox.log" &
  STACK_SANDBOX_PID=$!
  (umask 077; cat >"$work/sweetyd.conf" <<CONF
[db]
url = postgresql:///sweety?host=$work/pg&port=$SWEETY_TEST_PG_PORT&user=postgres
[http]
listen = 127.0.0.1:$port
public_url = http://127.0.0.1:$port
web_root = $SWEETY_ROOT/web
[security]
master_key_file = $work/master_key
token_secret_file = $work/token_secret
[trace]
endpoint = ipc://$work/trace
[stripe]
api_base = $sb
secret_key = $stripe_key
webhook_secret = $stripe_whsec
[cryptomus]
api_base = $sb
merchant = $cm_merchant
payment_key = $cm_key
[vapi]
api_base = $sb
webhook_secret = $vapi_secret
$extra
CONF
  )
  local ctl=("$bin/sweetyctl" -c "$work/sweetyd.conf")
  "${ctl[@]}" migrate >/dev/null
  STACK_VAPI_KEY=$vapi_key "${ctl[@]}" account add --name demo --api-key-env STACK_VAPI_KEY \
    --phone-number-id pn_demo --max-concurrent "${STACK_VAPI_LIMIT:-10}" >"$work/account_id"
  local plan
  for plan in free_trial standard extended premium; do
    "${ctl[@]}" plan set "$plan" --assistant-id "asst_demo_$plan" >/dev/null
    "${ctl[@]}" agent add --account "$(cat "$work/account_id")" --plan "$plan" \
      --max-concurrent "${STACK_AGENT_LIMIT:-5}" >/dev/null
  done
  "$bin/sweetyd" -c "$work/sweetyd.conf" 2>"$work/sweetyd.log" &
  STACK_DAEMON_PID=$!
  local _
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$STACK_DAEMON_PID" 2>/dev/null || { cat "$work/sweetyd.log" >&2; return 1; }
    sleep 0.1
  done
  export STACK_URL=http://127.0.0.1:$port STACK_SANDBOX_URL=$sb STACK_CONF=$work/sweetyd.conf
  export STACK_DAEMON_PID STACK_SANDBOX_PID
}

sweety_stack_stop() {
  local work=$1
  [ -n "${STACK_DAEMON_PID:-}" ] && kill -TERM "$STACK_DAEMON_PID" 2>/dev/null \
    && wait "$STACK_DAEMON_PID" 2>/dev/null || true
  [ -n "${STACK_SANDBOX_PID:-}" ] && kill -TERM "$STACK_SANDBOX_PID" 2>/dev/null \
    && wait "$STACK_SANDBOX_PID" 2>/dev/null || true
  sweety_pg_stop "$work/pg"
  rm -rf "$work"
}
