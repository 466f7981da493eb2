# Shared helpers for scripts/dev and scripts/test. Source, don't run.
# Everything binds to loopback; tools install under .tools/ in the checkout.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${EARSHOT_TOOLS_DIR:-$ROOT/.tools}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# What the user set, before anything here sets them: a URL the user gives is
# used as given (scripts/lib/servers.sh); without one earshot runs its own.
USER_DATABASE_URL="${DATABASE_URL:-}"
USER_REDIS_URL="${REDIS_URL:-}"
MOTO_PORT="${MOTO_PORT:-5000}"

log() { if [ -t 2 ]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# on_exit CMD: runs CMD when the script exits, the last registered first.
# One EXIT trap runs them all, so a script's cleanup and the servers it
# started never replace each other's trap.
EXIT_HOOKS=()
run_exit_hooks() {
  local i
  for ((i = ${#EXIT_HOOKS[@]} - 1; i >= 0; i--)); do eval "${EXIT_HOOKS[$i]}" || true; done
}
on_exit() { EXIT_HOOKS+=("$1"); trap run_exit_hooks EXIT; }

# Runs a command as root, through sudo when we are not root.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install them by hand"
  log "installing $* from the distribution's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  as_root apt-get update -q >/dev/null 2>&1 || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

source "$ROOT/scripts/lib/servers.sh"
source "$ROOT/scripts/lib/prereqs.sh"

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
