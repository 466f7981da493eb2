# PostgreSQL and Redis for scripts/dev, scripts/test and the benches.
# Sourced by common.sh; don't run.
#
# A URL the user set (DATABASE_URL, REDIS_URL) is used as given: its server,
# its auth, its password. Without one, earshot runs its own private servers
# from the distribution's binaries: data under a state folder, trust auth on
# 127.0.0.1 only, a private port (never 5432/6379), started on demand and
# stopped by whoever started them. A server the user already runs (the
# distribution's cluster on 5432, a Redis on 6379) is never started, stopped
# or reconfigured.

# First ports tried for the private servers; the next free one is taken
# when something else holds them (another checkout's servers, say).
PRIVATE_PG_PORT="${EARSHOT_PG_PORT:-55432}"
PRIVATE_REDIS_PORT="${EARSHOT_REDIS_PORT:-56379}"
# Set to 1 by the start functions when this script started the server (not
# when it found it running), so a script stops only what it started.
PRIVATE_PG_STARTED=0
PRIVATE_REDIS_STARTED=0

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The first free port from $1 upwards.
free_port_from() {
  local p="$1"
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}

# The newest PostgreSQL server binaries the distribution installed
# (/usr/lib/postgresql/N/bin), else the folder of an initdb on PATH.
pg_bin_dir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  command -v initdb >/dev/null && { dirname "$(readlink -f "$(command -v initdb)")"; return 0; }
  return 1
}

pg_answers() { psql "$DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1; }

redis_answers() { redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; }

# Installs the PostgreSQL server binaries without the cluster the package
# would create and start on 5432: earshot runs its own, and a system-wide
# server nobody asked for would outlive `scripts/dev down`.
install_postgres_binaries() {
  local dropin=/etc/postgresql-common/createcluster.d/earshot-no-main-cluster.conf
  as_root mkdir -p "${dropin%/*}"
  echo "create_main_cluster = false" | as_root tee "$dropin" >/dev/null
  apt_install postgresql postgresql-client
  as_root rm -f "$dropin"
}

# The user that runs PostgreSQL: initdb and postgres refuse root, so as root
# the distribution's `postgres` account (nobody if there is none) owns the
# data; anyone else runs it as themselves.
pg_run_user() {
  if [ "$(id -u)" != 0 ]; then id -un; elif getent passwd postgres >/dev/null; then echo postgres; else echo nobody; fi
}

as_pg_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$(pg_run_user)" -- "$@"; else "$@"; fi
}

# The data folder for the private server whose state is in $1. It is
# $1/data, unless we are root and the PostgreSQL user cannot reach it (a
# checkout under /root, say): then a folder under /var/tmp named after the
# state folder, remembered in $1/datadir so `down --purge` finds it.
pg_data_dir() {
  local state="$1"
  if [ -f "$state/datadir" ]; then cat "$state/datadir"; return 0; fi
  local dir="$state/data"
  if [ "$(id -u)" = 0 ] && ! as_pg_user test -x "$state"; then
    dir="/var/tmp/earshot-pg-$(printf '%s' "$state" | cksum | cut -d' ' -f1)"
  fi
  echo "$dir" >"$state/datadir"
  echo "$dir"
}

# Starts (or finds running) the private PostgreSQL whose state is in $1 and
# exports DATABASE_URL for it. $2 = "fast" for a test server: no fsync (a
# crash of the machine loses nothing a test needs), more connections for
# tests running in parallel.
start_private_postgres() {
  local state="$1" mode="${2:-}" bin data port
  bin="$(pg_bin_dir)" || { install_postgres_binaries; bin="$(pg_bin_dir)"; } \
    || die "no PostgreSQL server binaries (initdb) after installing them"
  command -v psql >/dev/null || export PATH="$bin:$PATH"
  mkdir -p "$state"
  [ "$(id -u)" = 0 ] && chown "$(pg_run_user)" "$state"
  data="$(pg_data_dir "$state")"
  if [ -f "$state/port" ] && as_pg_user "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
    port="$(cat "$state/port")"
  else
    if [ ! -f "$data/PG_VERSION" ]; then
      log "creating a private PostgreSQL cluster in $data"
      mkdir -p "$data"
      [ "$(id -u)" = 0 ] && chown "$(pg_run_user)" "$data"
      chmod 700 "$data"
      as_pg_user "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale="$(pg_locale)" \
        >"$state/initdb.log" 2>&1 || { cat "$state/initdb.log" >&2; die "initdb failed in $data"; }
      pg_private_conf "$state" "$data" "$mode"
    fi
    port="$(cat "$state/port" 2>/dev/null || true)"
    { [ -n "$port" ] && port_free "$port"; } || port="$(free_port_from "$PRIVATE_PG_PORT")"
    echo "$port" >"$state/port"
    log "starting the private PostgreSQL on 127.0.0.1:$port (data in $data)"
    as_pg_user "$bin/pg_ctl" start -w -t 60 -D "$data" -l "$data/server.log" -o "-p $port" >/dev/null \
      || { tail -n 20 "$data/server.log" >&2; die "the private PostgreSQL did not start (log: $data/server.log)"; }
    PRIVATE_PG_STARTED=1
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  for _ in $(seq 50); do pg_answers && return 0; sleep 0.2; done
  die "the private PostgreSQL does not answer at $DATABASE_URL (log: $data/server.log)"
}

# C.UTF-8 where the system has it (byte order, UTF-8 classes), else C.
pg_locale() { if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then echo C.UTF-8; else echo C; fi; }

# The private cluster's settings: loopback TCP only (no socket in a shared
# folder), trust for loopback (initdb's pg_hba.conf lists only local,
# 127.0.0.1/32 and ::1/128), TLS with a throwaway certificate when openssl is
# there (so tests exercise TLS as they would against a real server).
pg_private_conf() {
  local state="$1" data="$2" mode="$3" conf="$2/postgresql.conf"
  {
    echo "# earshot's private server (scripts/lib/servers.sh)"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = ''"
    echo "timezone = 'UTC'"
    echo "log_timezone = 'UTC'"
    if [ "$mode" = fast ]; then
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
      echo "max_connections = 300"
    fi
  } >>"$conf"
  if command -v openssl >/dev/null; then
    as_pg_user openssl req -new -x509 -days 3650 -nodes -subj /CN=127.0.0.1 \
      -keyout "$data/server.key" -out "$data/server.crt" >/dev/null 2>&1 \
      && as_pg_user chmod 600 "$data/server.key" \
      && printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >>"$conf"
  fi
}

stop_private_postgres() {
  local state="$1" bin data
  [ -f "$state/port" ] || return 0
  bin="$(pg_bin_dir)" || return 0
  data="$(pg_data_dir "$state")"
  if as_pg_user "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
    log "stopping the private PostgreSQL (127.0.0.1:$(cat "$state/port"))"
    as_pg_user "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null || true
  fi
}

# Removes the private PostgreSQL's data (stop it first).
purge_private_postgres() {
  local state="$1"
  [ -d "$state" ] || return 0
  local data; data="$(pg_data_dir "$state")"
  rm -rf "$data" "$state"
}

redis_pid() { local f="$1/redis.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }

# Starts (or finds running) the private Redis whose state is in $1 and
# exports REDIS_URL for it. Nothing is kept on disk: the cache and the rate
# limits are rebuilt from nothing.
start_private_redis() {
  local state="$1" port
  command -v redis-server >/dev/null || apt_install redis-server || die "redis-server is missing and could not be installed"
  mkdir -p "$state"
  if redis_pid "$state" >/dev/null && [ -f "$state/port" ]; then
    port="$(cat "$state/port")"
  else
    port="$(cat "$state/port" 2>/dev/null || true)"
    { [ -n "$port" ] && port_free "$port"; } || port="$(free_port_from "$PRIVATE_REDIS_PORT")"
    echo "$port" >"$state/port"
    log "starting the private Redis on 127.0.0.1:$port"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
      --dir "$state" --pidfile "$state/redis.pid" --logfile "$state/redis.log" >/dev/null \
      || die "the private Redis did not start (log: $state/redis.log)"
    PRIVATE_REDIS_STARTED=1
  fi
  export REDIS_URL="redis://127.0.0.1:$port"
  for _ in $(seq 50); do redis_answers && return 0; sleep 0.1; done
  tail -n 20 "$state/redis.log" >&2
  die "the private Redis does not answer at $REDIS_URL (log: $state/redis.log)"
}

stop_private_redis() {
  local state="$1" pid
  pid="$(redis_pid "$state")" || return 0
  log "stopping the private Redis (127.0.0.1:$(cat "$state/port"))"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# ensure_postgres STATE [fast]: the user's DATABASE_URL when they set one
# (it must answer: a password it needs goes in the URL), else the private
# server in STATE/postgres. Says which.
ensure_postgres() {
  local state="$1/postgres" mode="${2:-}"
  if [ -n "$USER_DATABASE_URL" ]; then
    export DATABASE_URL="$USER_DATABASE_URL"
    command -v psql >/dev/null || apt_install postgresql-client
    pg_answers || die "PostgreSQL at DATABASE_URL ($(redact_url "$DATABASE_URL")) does not answer: $(psql "$DATABASE_URL" -Atqc 'select 1' 2>&1 | head -n1)
  a server that needs a password takes it in the URL (postgres://USER:PASSWORD@HOST:PORT/DB);
  unset DATABASE_URL to let earshot run its own private PostgreSQL"
    log "PostgreSQL: the one DATABASE_URL names ($(redact_url "$DATABASE_URL"))"
  else
    start_private_postgres "$state" "$mode"
    log "PostgreSQL: earshot's private server at $DATABASE_URL"
  fi
}

# ensure_redis STATE: the user's REDIS_URL when set, else the private Redis
# in STATE/redis.
ensure_redis() {
  local state="$1/redis"
  if [ -n "$USER_REDIS_URL" ]; then
    export REDIS_URL="$USER_REDIS_URL"
    command -v redis-cli >/dev/null || apt_install redis-tools
    redis_answers || die "Redis at REDIS_URL ($(redact_url "$REDIS_URL")) does not answer; unset REDIS_URL to let earshot run its own private Redis"
    log "Redis: the one REDIS_URL names ($(redact_url "$REDIS_URL"))"
  else
    start_private_redis "$state"
    log "Redis: earshot's private server at $REDIS_URL"
  fi
}

# A URL with its password replaced by ***, for logs.
redact_url() { printf '%s' "$1" | sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#'; }

# use_servers STATE [fast]: PostgreSQL and Redis for this script
# (ensure_postgres, ensure_redis with state under STATE); the private
# servers it started stop when it exits, the user's are left alone.
use_servers() {
  SERVERS_STATE="$1"
  ensure_postgres "$1" "${2:-}"
  ensure_redis "$1"
  on_exit stop_started_servers
}

stop_started_servers() {
  if [ "$PRIVATE_PG_STARTED" = 1 ]; then stop_private_postgres "$SERVERS_STATE/postgres"; fi
  if [ "$PRIVATE_REDIS_STARTED" = 1 ]; then stop_private_redis "$SERVERS_STATE/redis"; fi
  return 0
}
