# Shared helpers for scripts/dev and scripts/test. Source, don't run.
# Everything binds to loopback; tools install under .tools/ in the checkout.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${EARSHOT_TOOLS_DIR:-$ROOT/.tools}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
MOTO_PORT="${MOTO_PORT:-5000}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root, through sudo when we are not root.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install them by hand"
  log "installing $* from the distribution's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { as_root apt-get update -q >/dev/null 2>&1 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

pg_answers() { psql "$DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1; }

# PostgreSQL: use the one DATABASE_URL points at; otherwise install and start
# the distribution's server (no systemd needed).
ensure_postgres() {
  pg_answers && return 0
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  local v; v="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
  [ -n "$v" ] || die "PostgreSQL is installed but has no cluster in /etc/postgresql"
  log "starting PostgreSQL $v"
  as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || as_root pg_ctlcluster "$v" main start || true
  for _ in $(seq 50); do pg_answers && return 0; sleep 0.2; done
  die "PostgreSQL does not answer at $DATABASE_URL"
}

redis_answers() {
  if command -v redis-cli >/dev/null; then redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; else return 1; fi
}

ensure_redis() {
  redis_answers && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do redis_answers && return 0; sleep 0.1; done
  die "Redis does not answer at $REDIS_URL"
}

# A venv per tool set under $TOOLS, so nothing touches the system Python.
venv_install() {
  local name="$1"; shift
  [ -x "$TOOLS/$name/bin/python" ] || python3 -m venv "$TOOLS/$name"
  "$TOOLS/$name/bin/pip" install -q --disable-pip-version-check "$@"
}

ensure_moto_installed() {
  [ -x "$TOOLS/moto/bin/moto_server" ] && return 0
  log "installing moto (Firehose, S3, SQS emulator) into $TOOLS/moto"
  venv_install moto 'moto[s3]==5.2.5' flask flask-cors
}

moto_answers() { curl -sf "http://127.0.0.1:$1/moto-api/" -o /dev/null; }

# Starts moto on $1 (port) with its pid and log in $2 (dir), unless one answers.
start_moto() {
  local port="$1" dir="$2"
  moto_answers "$port" && return 0
  ensure_moto_installed
  mkdir -p "$dir"
  "$TOOLS/moto/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  for _ in $(seq 100); do moto_answers "$port" && return 0; sleep 0.2; done
  cat "$dir/moto.log" >&2; die "moto did not start on port $port"
}

# The edge benches' secrets and their signed pixel request, the one the
# system bench sends (functions/edge/benches/system.rs).
BENCH_LISTENER_SECRET=bench-listener-secret-0123456789
BENCH_SIGNING_SECRET=bench-signing-secret-0123456789
BENCH_PIXEL_QUERY="c=spring-sale-2026&cr=cr_30s_v2&ep=ep-101&sh=dailytech&pos=mid&ev=impression"
BENCH_USER_AGENT="Podcasts/1650.20 CFNetwork/1333.0.4 Darwin/21.5.0"

# Waits until the bench edge PID, logging to LOG, answers /healthz on
# 127.0.0.1:PORT; tries TRIES times, 0.1 s apart (100). Dies with the log if
# the edge exits or never answers.
wait_for_bench_edge() {
  local port="$1" pid="$2" log="$3" tries="${4:-100}"
  for _ in $(seq "$tries"); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the edge on port $port did not start"; }
    sleep 0.1
  done
  cat "$log" >&2
  die "the edge on port $port did not answer /healthz"
}

# Prints the signed pixel path under key k1 = BENCH_SIGNING_SECRET.
# docs/SIGNING.md: base64url, no padding, of HMAC-SHA256 over the canonical
# string (here the query itself, in canonical order), 22 characters.
bench_pixel_path() {
  local sig
  sig="$(python3 -c 'import base64, hashlib, hmac, sys
mac = hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).digest()
print(base64.urlsafe_b64encode(mac).decode().rstrip("=")[:22])' "$BENCH_SIGNING_SECRET" "$BENCH_PIXEL_QUERY")"
  echo "/v1/t?$BENCH_PIXEL_QUERY&k=k1&sig=$sig&cb=1700000000"
}
