# Checks, before anything builds, everything scripts/dev and scripts/test
# need, and reports what is missing in one message, each line with its fix.
# What the distribution packages is installed with apt when this user can
# (root, or sudo); the rest (Rust) only the user can fix. Sourced by
# common.sh; don't run.

# The workspace's rust-version, from the root Cargo.toml.
workspace_rust_version() { sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n1; }

# True when version $1 >= version $2 (dotted numbers).
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

can_apt() {
  command -v apt-get >/dev/null || return 1
  [ "$(id -u)" = 0 ] || command -v sudo >/dev/null
}

# check_prereqs [postgres] [redis] [browser]: the always-needed tools, plus
# the server binaries earshot runs itself when no URL names one, plus
# Chromium for the browser tests.
check_prereqs() {
  local want=" $* " problems=() packages=() need_pg_server=0
  local rust_min; rust_min="$(workspace_rust_version)"
  if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    problems+=("Rust: cargo/rustc not found; install Rust $rust_min or newer with rustup (https://rustup.rs), then open a new shell")
  else
    local have; have="$(rustc --version | awk '{print $2}')"
    version_ge "${have%%-*}" "$rust_min" \
      || problems+=("Rust: rustc $have is older than the workspace's rust-version $rust_min; run: rustup update stable")
  fi
  command -v cc >/dev/null || command -v gcc >/dev/null || command -v clang >/dev/null || packages+=(gcc)
  command -v curl >/dev/null || packages+=(curl)
  if ! command -v python3 >/dev/null; then packages+=(python3 python3-venv)
  elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then packages+=(python3-venv)
  fi
  command -v psql >/dev/null || [ -x "$(pg_bin_dir 2>/dev/null)/psql" ] || packages+=(postgresql-client)
  if [[ "$want" == *" postgres "* ]] && [ -z "$USER_DATABASE_URL" ] && ! pg_bin_dir >/dev/null; then
    need_pg_server=1
  fi
  if [[ "$want" == *" redis "* ]]; then
    if [ -z "$USER_REDIS_URL" ]; then command -v redis-server >/dev/null || packages+=(redis-server)
    else command -v redis-cli >/dev/null || packages+=(redis-tools); fi
  fi
  if [[ "$want" == *" browser "* ]] && [ ! -x "${EARSHOT_CHROMIUM:-/usr/bin/chromium}" ]; then
    packages+=(chromium)
  fi

  if [ ${#packages[@]} -gt 0 ] || [ "$need_pg_server" = 1 ]; then
    local names="${packages[*]}"
    [ "$need_pg_server" = 1 ] && names="$names postgresql (server binaries)"
    if can_apt; then
      if [ ${#packages[@]} -gt 0 ]; then apt_install "${packages[@]}" || problems+=("could not install ${packages[*]} with apt-get; install them by hand"); fi
      if [ "$need_pg_server" = 1 ]; then install_postgres_binaries || problems+=("could not install PostgreSQL with apt-get; install the postgresql package, or set DATABASE_URL to a server you run"); fi
    elif command -v apt-get >/dev/null; then
      problems+=("missing:${names}; not root and no sudo: ask an administrator to run: apt-get install ${packages[*]}$([ "$need_pg_server" = 1 ] && echo ' postgresql')")
    else
      local p
      for p in "${packages[@]}"; do problems+=("$p: not found and no apt-get here; install it with this system's package manager"); done
      [ "$need_pg_server" = 1 ] && problems+=("PostgreSQL server binaries (initdb, pg_ctl): not found and no apt-get here; install PostgreSQL 13 or newer, or set DATABASE_URL to a server you run")
    fi
  fi

  if [ ${#problems[@]} -gt 0 ]; then
    printf 'error: earshot needs a few things this machine lacks:\n' >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
  fi
}
