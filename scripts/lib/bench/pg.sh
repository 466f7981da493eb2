# Helpers of the loader benchmarks (sourced): databases by name on the
# server DATABASE_URL names, the wall clock, and arithmetic.
# Needs BIN (the release earshot).

# postgres://u@h:p/db?q -> the same URL with database $1
db_url() { python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$DATABASE_URL" "$1"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { OFMT = \"%.6f\"; print $1 }"; }
fresh_db() { # name -> migrated database
  psql "$DATABASE_URL" -qc "CREATE DATABASE $1" >/dev/null
  DATABASE_URL="$(db_url "$1")" RUST_LOG=warn "$BIN" migrate >/dev/null
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
