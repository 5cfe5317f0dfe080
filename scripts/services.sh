#!/usr/bin/env bash
# Make PostgreSQL and Redis available on loopback for tests, examples and benches, and
# install the reference MCP server (@modelcontextprotocol/server-everything, run by the
# cortex-mcp interop tests with node).
#
#   scripts/services.sh            start (or reuse) both, install the MCP server, print `export` lines
#   scripts/services.sh stop       stop only the instances this script started
#   scripts/services.sh status     say what answers
#   scripts/services.sh redact URL print URL with its password hidden (for the tests)
#   scripts/services.sh tls        start (or reuse) a TLS-only PostgreSQL and Redis, print `export` lines
#   scripts/services.sh tls-stop   stop the TLS instances this script started
#
# Idempotent: a server that already answers at DATABASE_URL / REDIS_URL is left alone.
# Otherwise the Debian packages are installed when missing and throwaway instances are
# started with their data under target/services (no Redis persistence). As root, when
# the postgres user cannot reach target/services, the cluster goes to a fresh folder
# made by `mktemp -d` under /tmp (its path is kept in target/services/pg.path). The MCP
# server is installed with npm under target/services/mcp-everything (node and npm come
# from Debian packages when missing) and is started by the tests themselves;
# MCP_EVERYTHING_JS names its entry point. promtool (Debian's prometheus package, whose
# server is not started) checks metrics exposition; PROMTOOL names it. Progress goes to stderr; stdout carries only
# the export lines, so `eval "$(scripts/services.sh)"` works.
#
# The `tls` mode is opt-in and leaves the servers above alone: it makes a throwaway CA
# and a server certificate for 127.0.0.1 and localhost with openssl (under
# target/services/tls, kept and reused), then starts a separate PostgreSQL cluster that
# accepts only TLS connections (ssl=on, hostssl) on TLS_PG_PORT (default 5433) and a
# separate redis-server that listens only on its TLS port TLS_REDIS_PORT (default 6380,
# plain port 0). It prints TLS_CA_FILE (the CA), TLS_OTHER_CA_FILE (a CA that signed
# nothing here, for tests of a wrong CA), TLS_DATABASE_URL and TLS_REDIS_URL. Servers that
# already answer over TLS with the current CA are reused.
#
# FOR TESTS ONLY. The throwaway servers trust every local user: PostgreSQL accepts any
# role without a password on 127.0.0.1 and on its socket (trust authentication, and the
# first role is a superuser, which can run programs as the postgres system user), and
# Redis has no password. Anyone who can log in to this machine can read, change or
# delete their data. Run them on a machine or CI runner of your own, never on a shared
# host and never with real data.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state="${CORTEX_SERVICES_DIR:-$root/target/services}"
DATABASE_URL="${DATABASE_URL:-postgres://cortex@127.0.0.1:5432/cortex}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
WAIT_SECS="${CORTEX_SERVICES_WAIT:-30}"
# Pinned: the interop tests check this version's tools and texts.
MCP_EVERYTHING_PKG=@modelcontextprotocol/server-everything
MCP_EVERYTHING_VERSION=2026.8.31

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# host and port of a URL like scheme://user:pw@host:port/db (password never printed).
url_host() { local h=${1#*://}; h=${h##*@}; h=${h%%/*}; h=${h%%\?*}; printf '%s' "${h%:*}"; }
url_port() {
  local h=${1#*://}; h=${h##*@}; h=${h%%/*}; h=${h%%\?*}
  if [[ $h == *:* ]]; then printf '%s' "${h##*:}"; else printf '%s' "$2"; fi
}
# A port from a URL, checked before any use (it goes into `sh -c` command lines):
# digits only, 1 to 65535.
valid_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && (( 10#$1 >= 1 && 10#$1 <= 65535 )); }
url_user() { local u=${1#*://}; if [[ $u == *@* ]]; then u=${u%%@*}; printf '%s' "${u%%:*}"; fi; }
url_db() { local d=${1#*://}; d=${d#*/}; [[ $1 == */*/* ]] || d=""; printf '%s' "${d%%\?*}"; }
# The URL with every password hidden; the same rule as cortex_pool::redact_url (the pool
# tests check that both agree). Everything from the first ':' after 'scheme://' to the
# LAST '@' is hidden, so a password holding '@', '/', '?', '#' or ':' never shows
# (redis://:pw@host too), and so is the value of a key=value pair that starts the text or
# follows '?', '&' or white space and whose key ends in password, passwd, pass, pwd, token
# or secret (any case), up to the next '&'. Byte-wise (LC_ALL=C), as the Rust one.
redact() {
  local LC_ALL=C
  local url=$1 begin=0 rest head user key val c i=0 start=1 m j ts te s e out="" pos=0 ms=-1 me=-1
  local re_scheme='^[A-Za-z][A-Za-z0-9+.-]*://' re_key='^([A-Za-z0-9_.-]*)=' re_secret='(password|passwd|pass|pwd|token|secret)$'
  local -a starts=() ends=()
  if [[ $url =~ $re_scheme ]]; then begin=${#BASH_REMATCH[0]}; fi
  rest=${url:begin}
  if [[ $rest == *@* ]]; then
    head=${rest%@*}
    if [[ $head == *:* ]]; then
      user=${head%%:*}
      starts+=($((begin + ${#user} + 1))); ends+=($((begin + ${#head})))
    fi
  fi
  while (( i < ${#url} )); do
    if (( start )) && [[ ${url:i} =~ $re_key ]]; then
      key=${BASH_REMATCH[1]}
      if [[ ${key,,} =~ $re_secret ]]; then
        val=${url:i+${#key}+1}; val=${val%%&*}
        starts+=($((i + ${#key} + 1))); ends+=($((i + ${#key} + 1 + ${#val})))
        i=$((i + ${#key} + 1 + ${#val})); start=0
        continue
      fi
    fi
    c=${url:i:1}; i=$((i + 1))
    case $c in '?'|'&'|' '|$'\t'|$'\n'|$'\r') start=1 ;; *) start=0 ;; esac
  done
  # Sort the spans by start (there are a few), then merge and replace them.
  for ((m = 1; m < ${#starts[@]}; m++)); do
    ts=${starts[m]}; te=${ends[m]}; j=$((m - 1))
    while (( j >= 0 && starts[j] > ts )); do starts[j+1]=${starts[j]}; ends[j+1]=${ends[j]}; j=$((j - 1)); done
    starts[j+1]=$ts; ends[j+1]=$te
  done
  for ((m = 0; m < ${#starts[@]}; m++)); do
    s=${starts[m]}; e=${ends[m]}
    (( s < e )) || continue
    if (( ms >= 0 && s <= me )); then
      if (( e > me )); then me=$e; fi
      continue
    fi
    if (( ms >= 0 )); then out+="${url:pos:ms-pos}***"; pos=$me; fi
    ms=$s; me=$e
  done
  if (( ms >= 0 )); then out+="${url:pos:ms-pos}***"; pos=$me; fi
  printf '%s' "$out${url:pos}"
}
is_loopback() { [[ $1 == 127.* || $1 == localhost || $1 == "::1" || $1 == "[::1]" ]]; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && printf '%s' "$d"
}

pg_answers() { command -v psql >/dev/null && psql "$DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1; }
redis_answers() {
  command -v redis-cli >/dev/null && [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" = PONG ]
}

# Run a command as the postgres user when we are root (PostgreSQL refuses to run as root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}

install_packages() {
  local pkgs=("$@")
  [ ${#pkgs[@]} -gt 0 ] || return 0
  command -v apt-get >/dev/null || die "need ${pkgs[*]} but apt-get is not available: install them by hand"
  [ "$(id -u)" = 0 ] || die "need ${pkgs[*]}: run as root or install them by hand"
  log "installing ${pkgs[*]} (apt-get)"
  # Keep the packages' own service start-up from grabbing 5432/6379: we start our own.
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  } >"$state/apt.log" 2>&1 || rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || { tail -n 20 "$state/apt.log" >&2; die "apt-get install ${pkgs[*]} failed (log: $state/apt.log)"; }
}

wait_for() { # description, command...
  local what=$1; shift
  local deadline=$((SECONDS + WAIT_SECS))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
  log "$what answers"
}

# Whether a recorded cluster folder is still the one made for us: a real folder (not a
# link) owned by the user the server runs as.
pg_dir_ours() {
  local want
  if [ "$(id -u)" = 0 ]; then want=postgres; else want=$(id -un); fi
  [ -d "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %U -- "$1")" = "$want" ]
}

# Where the PostgreSQL cluster lives: under target/ when the postgres user can reach it
# (as root the server runs as postgres, and a checkout in a private folder is out of its
# reach), otherwise a fresh folder from `mktemp -d` under /tmp: never a predictable
# path, where another local user could plant a link for root to chown.
pg_dir() {
  local name=${1:-pg}
  local dir="$state/$name"
  if [ -f "$state/$name.path" ]; then
    dir=$(cat "$state/$name.path")
    if pg_dir_ours "$dir"; then printf '%s' "$dir"; return; fi
    log "the recorded cluster folder $dir is gone or not ours: making a new one"
    dir="$state/$name"
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    if ! as_pg "test -w '$dir'"; then
      dir=$(mktemp -d /tmp/cortex-services.XXXXXXXXXX) || die "mktemp -d failed"
      chown postgres: "$dir"
      log "the postgres user cannot reach $state: cluster goes to $dir"
    fi
  fi
  printf '%s' "$dir" >"$state/$name.path"
  printf '%s' "$dir"
}

start_postgres() {
  local host port user db bin dir
  host=$(url_host "$DATABASE_URL"); port=$(url_port "$DATABASE_URL" 5432)
  valid_port "$port" || die "the port in DATABASE_URL $(redact "$DATABASE_URL") is not a number from 1 to 65535"
  port=$((10#$port))
  user=$(url_user "$DATABASE_URL"); user=${user:-postgres}; db=$(url_db "$DATABASE_URL"); db=${db:-$user}
  is_loopback "$host" || die "PostgreSQL at $(redact "$DATABASE_URL") does not answer, and it is not on loopback: not starting one"
  [[ $user =~ ^[a-z_][a-z0-9_]*$ ]] || die "database user '$user' in DATABASE_URL is not a plain identifier"
  [[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || die "database name '$db' in DATABASE_URL is not a plain identifier"
  if port_open 127.0.0.1 "$port"; then
    die "port $port on 127.0.0.1 is held by something that does not answer as PostgreSQL for $(redact "$DATABASE_URL"): $(holder "$port")"
  fi
  bin=$(pg_bin) || true
  [ -n "$bin" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  dir=$(pg_dir)
  if [ ! -s "$dir/data/PG_VERSION" ]; then
    log "initdb in $dir/data"
    as_pg "'$bin/initdb' -D '$dir/data' -U '$user' -A trust -E UTF8 --no-locale" >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    # Trust on loopback and the private socket only; nothing else may connect.
    printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/data/pg_hba.conf"
  fi
  log "starting PostgreSQL on 127.0.0.1:$port"
  as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t '$WAIT_SECS' \
    -o \"-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir' \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
        -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all\" start" \
    >/dev/null || { tail -n 20 "$dir/server.log" >&2; die "PostgreSQL did not start (log: $dir/server.log)"; }
  touch "$dir/started-by-us"
  if ! as_pg "'$bin/psql' -h '$dir' -p $port -U '$user' -d postgres -Atqc \"select 1 from pg_database where datname = '$db'\"" | grep -q 1; then
    as_pg "'$bin/createdb' -h '$dir' -p $port -U '$user' '$db'" || die "createdb $db failed"
  fi
  wait_for "PostgreSQL at $(redact "$DATABASE_URL")" pg_answers || die "PostgreSQL started but $(redact "$DATABASE_URL") does not answer"
}

start_redis() {
  local host port dir
  host=$(url_host "$REDIS_URL"); port=$(url_port "$REDIS_URL" 6379)
  valid_port "$port" || die "the port in REDIS_URL $(redact "$REDIS_URL") is not a number from 1 to 65535"
  port=$((10#$port))
  is_loopback "$host" || die "Redis at $(redact "$REDIS_URL") does not answer, and it is not on loopback: not starting one"
  if port_open 127.0.0.1 "$port"; then
    die "port $port on 127.0.0.1 is held by something that does not answer as Redis for $(redact "$REDIS_URL"): $(holder "$port")"
  fi
  dir="$state/redis"
  mkdir -p "$dir"
  log "starting Redis on 127.0.0.1:$port"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/server.log" >/dev/null \
    || die "redis-server did not start (log: $dir/server.log)"
  touch "$dir/started-by-us"
  wait_for "Redis at $(redact "$REDIS_URL")" redis_answers || die "Redis started but $(redact "$REDIS_URL") does not answer (log: $dir/server.log)"
}

# The reference MCP server's entry point (absolute, whether or not it is installed yet).
mcp_everything_js() {
  local dir=$state/mcp-everything
  [[ $dir == /* ]] || dir=$PWD/$dir
  printf '%s' "$dir/node_modules/$MCP_EVERYTHING_PKG/dist/index.js"
}

install_mcp_everything() {
  local dir=$state/mcp-everything js
  js=$(mcp_everything_js)
  if [ -f "$js" ]; then
    log "MCP reference server already installed at $js"
    return 0
  fi
  mkdir -p "$dir"
  log "installing $MCP_EVERYTHING_PKG@$MCP_EVERYTHING_VERSION (npm) into $dir"
  npm install --no-audit --no-fund --prefix "$dir" "$MCP_EVERYTHING_PKG@$MCP_EVERYTHING_VERSION" >"$dir/npm.log" 2>&1 \
    || { tail -n 20 "$dir/npm.log" >&2; die "npm install $MCP_EVERYTHING_PKG@$MCP_EVERYTHING_VERSION failed (log: $dir/npm.log)"; }
  [ -f "$js" ] || die "npm installed $MCP_EVERYTHING_PKG@$MCP_EVERYTHING_VERSION but $js is missing (log: $dir/npm.log)"
}

holder() {
  if command -v ss >/dev/null; then
    ss -ltnpH "sport = :$1" 2>/dev/null | sed -E 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/\1 (pid \2)/' | head -n 1
  else
    printf 'unknown process'
  fi
}

stop_all() {
  local bin
  local pgdir
  pgdir=$(cat "$state/pg.path" 2>/dev/null || printf '%s' "$state/pg")
  if [ -f "$pgdir/started-by-us" ]; then
    bin=$(pg_bin) || true
    if [ -n "$bin" ] && [ -f "$pgdir/data/postmaster.pid" ]; then
      log "stopping PostgreSQL (pid $(head -n 1 "$pgdir/data/postmaster.pid"))"
      as_pg "'$bin/pg_ctl' -D '$pgdir/data' -m fast -w -t '$WAIT_SECS' stop" >/dev/null || log "pg_ctl stop failed"
    fi
    rm -f "$pgdir/started-by-us"
  fi
  if [ -f "$state/redis/started-by-us" ]; then
    local pid
    pid=$(cat "$state/redis/redis.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
      log "stopping Redis (pid $pid)"
      kill "$pid"
      local deadline=$((SECONDS + WAIT_SECS))
      while kill -0 "$pid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { kill -9 "$pid" 2>/dev/null || true; break; }
        sleep 0.1
      done
    fi
    rm -f "$state/redis/started-by-us" "$state/redis/redis.pid"
  fi
}

# --- The opt-in TLS instances -----------------------------------------------------------
# A port given in the environment is used as given. Otherwise the TLS servers take the
# ports this checkout used last, else the first free ports from 5433 and 6380, so the TLS
# servers of another checkout (made with another CA) never stand in this one's way.
TLS_PORTS_GIVEN="${TLS_PG_PORT:+pg}${TLS_REDIS_PORT:+redis}"
TLS_PG_PORT="${TLS_PG_PORT:-5433}"
TLS_REDIS_PORT="${TLS_REDIS_PORT:-6380}"
tls_dir() { printf '%s' "$state/tls"; }
tls_database_url() { printf 'postgres://cortex@127.0.0.1:%s/cortex?sslmode=require' "$TLS_PG_PORT"; }
tls_redis_url() { printf 'rediss://127.0.0.1:%s' "$TLS_REDIS_PORT"; }

# Answers over TLS, verified against our CA (so a server with an older CA is not reused).
tls_pg_answers() {
  PGSSLMODE=verify-full PGSSLROOTCERT="$(tls_dir)/ca.pem" \
    psql "postgres://cortex@127.0.0.1:$TLS_PG_PORT/cortex" -Atqc 'select 1' >/dev/null 2>&1
}
tls_redis_answers() {
  [ "$(redis-cli --tls --cacert "$(tls_dir)/ca.pem" -h 127.0.0.1 -p "$TLS_REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

# A CA, a server certificate it signs for 127.0.0.1 and localhost, and a second CA that
# signs nothing. Made once; a half-made set is made again.
tls_certs() {
  local d
  d=$(tls_dir)
  if [ -s "$d/ca.pem" ] && [ -s "$d/server.pem" ] && [ -s "$d/server.key" ] && [ -s "$d/other-ca.pem" ]; then
    return 0
  fi
  mkdir -p "$d"
  chmod 700 "$d"
  log "making a test CA and a server certificate in $d"
  (
    cd "$d"
    rm -f ./*.pem ./*.key ./*.csr ./*.srl ./*.ext
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=cortex test CA' \
      -keyout ca.key -out ca.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=cortex other test CA' \
      -keyout other-ca.key -out other-ca.pem
    openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem
    chmod 600 ./*.key
  ) >"$d/openssl.log" 2>&1 || { tail -n 20 "$d/openssl.log" >&2; die "openssl failed (log: $d/openssl.log)"; }
}

start_tls_postgres() {
  local bin dir port=$TLS_PG_PORT
  valid_port "$port" || die "TLS_PG_PORT '$port' is not a number from 1 to 65535"
  port=$((10#$port))
  if port_open 127.0.0.1 "$port"; then
    die "port $port on 127.0.0.1 is held by something that does not answer as the TLS PostgreSQL: $(holder "$port")"
  fi
  bin=$(pg_bin) || true
  [ -n "$bin" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  dir=$(pg_dir pg-tls)
  if [ ! -s "$dir/data/PG_VERSION" ]; then
    log "initdb in $dir/data (TLS cluster)"
    as_pg "'$bin/initdb' -D '$dir/data' -U cortex -A trust -E UTF8 --no-locale" >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    # TLS connections from loopback and the private socket only: a plain TCP
    # connection is refused, so a test that gets in has used TLS.
    printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/data/pg_hba.conf"
  fi
  # The server reads its key as the user it runs as, and wants it private.
  cp "$(tls_dir)/server.pem" "$dir/server.pem"
  cp "$(tls_dir)/server.key" "$dir/server.key"
  chmod 600 "$dir/server.key"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/server.pem" "$dir/server.key"
  log "starting the TLS PostgreSQL on 127.0.0.1:$port"
  as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t '$WAIT_SECS' \
    -o \"-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir' \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
        -c ssl=on -c ssl_cert_file='$dir/server.pem' -c ssl_key_file='$dir/server.key'\" start" \
    >/dev/null 9>&- || { tail -n 20 "$dir/server.log" >&2; die "the TLS PostgreSQL did not start (log: $dir/server.log)"; }
  touch "$dir/started-by-us"
  if ! as_pg "'$bin/psql' -h '$dir' -p $port -U cortex -d postgres -Atqc \"select 1 from pg_database where datname = 'cortex'\"" | grep -q 1; then
    as_pg "'$bin/createdb' -h '$dir' -p $port -U cortex cortex" || die "createdb cortex failed (TLS cluster)"
  fi
  wait_for "the TLS PostgreSQL at $(tls_database_url)" tls_pg_answers || die "the TLS PostgreSQL started but does not answer over TLS (log: $dir/server.log)"
}

start_tls_redis() {
  local dir port=$TLS_REDIS_PORT d
  valid_port "$port" || die "TLS_REDIS_PORT '$port' is not a number from 1 to 65535"
  port=$((10#$port))
  if port_open 127.0.0.1 "$port"; then
    die "port $port on 127.0.0.1 is held by something that does not answer as the TLS Redis: $(holder "$port")"
  fi
  d=$(tls_dir); dir="$state/redis-tls"
  mkdir -p "$dir"
  log "starting the TLS Redis on 127.0.0.1:$port"
  redis-server --bind 127.0.0.1 --port 0 --tls-port "$port" \
    --tls-cert-file "$d/server.pem" --tls-key-file "$d/server.key" --tls-ca-cert-file "$d/ca.pem" \
    --tls-auth-clients no --save '' --appendonly no --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/server.log" >/dev/null 9>&- \
    || die "the TLS redis-server did not start (log: $dir/server.log)"
  touch "$dir/started-by-us"
  wait_for "the TLS Redis at $(tls_redis_url)" tls_redis_answers || die "the TLS Redis started but does not answer over TLS (log: $dir/server.log)"
}

stop_tls() {
  local bin pgdir pid
  pgdir=$(cat "$state/pg-tls.path" 2>/dev/null || printf '%s' "$state/pg-tls")
  if [ -f "$pgdir/started-by-us" ]; then
    bin=$(pg_bin) || true
    if [ -n "$bin" ] && [ -f "$pgdir/data/postmaster.pid" ]; then
      log "stopping the TLS PostgreSQL (pid $(head -n 1 "$pgdir/data/postmaster.pid"))"
      as_pg "'$bin/pg_ctl' -D '$pgdir/data' -m fast -w -t '$WAIT_SECS' stop" >/dev/null || log "pg_ctl stop failed"
    fi
    rm -f "$pgdir/started-by-us"
  fi
  if [ -f "$state/redis-tls/started-by-us" ]; then
    pid=$(cat "$state/redis-tls/redis.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
      log "stopping the TLS Redis (pid $pid)"
      kill "$pid"
      local deadline=$((SECONDS + WAIT_SECS))
      while kill -0 "$pid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { kill -9 "$pid" 2>/dev/null || true; break; }
        sleep 0.1
      done
    fi
    rm -f "$state/redis-tls/started-by-us" "$state/redis-tls/redis.pid"
  fi
}

# Sets TLS_PG_PORT and TLS_REDIS_PORT (see above) and remembers them in $state/tls.ports.
tls_pick_ports() {
  local last_pg='' last_redis='' i
  if [ -f "$state/tls.ports" ]; then
    read -r last_pg last_redis <"$state/tls.ports" || true
  fi
  case "$TLS_PORTS_GIVEN" in *pg*) ;; *)
    valid_port "$last_pg" && TLS_PG_PORT=$last_pg
    for ((i = 0; i < 100; i++)); do
      port_open 127.0.0.1 "$TLS_PG_PORT" || break
      tls_pg_answers && break
      TLS_PG_PORT=$((TLS_PG_PORT + 1))
    done ;;
  esac
  case "$TLS_PORTS_GIVEN" in *redis*) ;; *)
    valid_port "$last_redis" && TLS_REDIS_PORT=$last_redis
    for ((i = 0; i < 100; i++)); do
      port_open 127.0.0.1 "$TLS_REDIS_PORT" || break
      tls_redis_answers && break
      TLS_REDIS_PORT=$((TLS_REDIS_PORT + 1))
    done ;;
  esac
  printf '%s %s\n' "$TLS_PG_PORT" "$TLS_REDIS_PORT" >"$state/tls.ports"
}

start_tls() {
  local need=() d
  mkdir -p "$state"
  # One caller at a time (test runners start many processes at once): the others
  # wait here and then find the servers answering. The servers are started without
  # this descriptor, so the lock ends with this script.
  if command -v flock >/dev/null; then
    exec 9>"$state/tls.lock"
    flock -w "$((WAIT_SECS * 2))" 9 || die "another 'services.sh tls' holds $state/tls.lock for too long"
  fi
  { [ -n "$(pg_bin)" ] && command -v psql >/dev/null; } || need+=(postgresql)
  { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; } || need+=(redis-server)
  command -v openssl >/dev/null || need+=(openssl)
  if [ ${#need[@]} -gt 0 ]; then install_packages "${need[@]}"; fi
  d=$(tls_dir)
  if [ ! -s "$d/ca.pem" ] || [ ! -s "$d/server.pem" ] || [ ! -s "$d/server.key" ] || [ ! -s "$d/other-ca.pem" ]; then
    # New certificates: servers of ours still holding old ones must not be reused.
    stop_tls
    tls_certs
  fi
  tls_pick_ports
  if tls_pg_answers; then log "the TLS PostgreSQL already answers at $(tls_database_url)"; else start_tls_postgres; fi
  if tls_redis_answers; then log "the TLS Redis already answers at $(tls_redis_url)"; else start_tls_redis; fi
  printf 'export TLS_CA_FILE=%q\nexport TLS_OTHER_CA_FILE=%q\nexport TLS_DATABASE_URL=%q\nexport TLS_REDIS_URL=%q\n' \
    "$d/ca.pem" "$d/other-ca.pem" "$(tls_database_url)" "$(tls_redis_url)"
}

case "${1:-start}" in
  start)
    mkdir -p "$state"
    need=()
    # Clients first: they are how we tell whether a server already answers.
    pg_answers || { [ -n "$(pg_bin)" ] && command -v psql >/dev/null; } || need+=(postgresql)
    redis_answers || command -v redis-server >/dev/null || need+=(redis-server)
    { command -v node >/dev/null && command -v npm >/dev/null; } || need+=(nodejs npm)
    # cortex-mcp's TLS test makes its certificates with the openssl command.
    command -v openssl >/dev/null || need+=(openssl)
    # cortex-metrics checks its exposition with promtool (Debian's prometheus package;
    # its own service is kept from starting like the others').
    command -v promtool >/dev/null || need+=(prometheus)
    if [ ${#need[@]} -gt 0 ]; then install_packages "${need[@]}"; fi
    if pg_answers; then
      log "PostgreSQL already answers at $(redact "$DATABASE_URL")"
    else
      # The index advisor verifies its candidates with HypoPG (hypothetical indexes).
      major=$(basename "$(dirname "$(pg_bin)")")
      [ -f "/usr/share/postgresql/$major/extension/hypopg.control" ] || install_packages "postgresql-$major-hypopg"
      start_postgres
    fi
    if redis_answers; then log "Redis already answers at $(redact "$REDIS_URL")"; else start_redis; fi
    install_mcp_everything
    printf 'export DATABASE_URL=%q\nexport REDIS_URL=%q\nexport MCP_EVERYTHING_JS=%q\nexport PROMTOOL=%q\n' \
      "$DATABASE_URL" "$REDIS_URL" "$(mcp_everything_js)" "$(command -v promtool)"
    ;;
  stop) stop_all ;;
  status)
    if pg_answers; then log "PostgreSQL answers at $(redact "$DATABASE_URL")"; else log "PostgreSQL does not answer at $(redact "$DATABASE_URL")"; fi
    if redis_answers; then log "Redis answers at $(redact "$REDIS_URL")"; else log "Redis does not answer at $(redact "$REDIS_URL")"; fi
    if [ -f "$(mcp_everything_js)" ]; then log "MCP reference server installed at $(mcp_everything_js)"; else log "MCP reference server not installed"; fi
    ;;
  redact) redact "${2-}" ;;
  tls) start_tls ;;
  tls-stop) stop_tls ;;
  *) die "unknown command '$1' (use start, stop, status, tls or tls-stop)" ;;
esac
