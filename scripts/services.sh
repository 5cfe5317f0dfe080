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
#   scripts/services.sh cluster    start (or reuse) a Redis Cluster and a PostgreSQL replica, print `export` lines
#   scripts/services.sh cluster-stop        stop them and remove their data (never the servers above)
#   scripts/services.sh cluster-kill PORT   SIGKILL one Redis Cluster node (a crash, for failover tests)
#   scripts/services.sh cluster-start PORT  start that node again with its nodes.conf
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
# The `cluster` mode is opt-in too and leaves the servers above alone, except that it
# adds a `host replication all 127.0.0.1/32 trust` line to the pg_hba.conf of the default
# PostgreSQL when this script made that server (once, then reloads it). It starts six
# `redis-server --cluster-enabled yes` on the first free ports from 7000 (bus port + 10000
# free too), joins them with `redis-cli --cluster create ... --cluster-replicas 1` into 3
# masters with one replica each (node timeout CLUSTER_NODE_TIMEOUT_MS, default 3000), and
# makes a hot-standby replica of the server at DATABASE_URL with `pg_basebackup -R -X
# stream`, started on the first free port from 5440. Ports are remembered under
# target/services, so a second call finds the same servers (a node that is down is
# started again from its nodes.conf). It waits (CORTEX_SERVICES_WAIT seconds) until every
# node says cluster_state:ok with all slots served and every master has a replica in
# sync, and until a row written on the primary shows on the replica, then prints
# REDIS_CLUSTER_URLS (redis://127.0.0.1:P of all six nodes, comma-separated, by port),
# REDIS_CLUSTER_PORTS (the same ports) and DB_REPLICA_URLS (postgres://USER@127.0.0.1:P/DB).
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
# The URL with every password hidden; the same rule as cortex_support::redact::redact_url (the pool
# tests check that both agree). Everything from the first ':' after 'scheme://' to the
# LAST '@' is hidden, so a password holding '@', '/', '?', '#' or ':' never shows
# (redis://:pw@host too), and so is the value of a key=value pair that starts the text or
# follows '?', '&' or white space and whose key ends in password, passwd, pass, pwd, token
# or secret (any case), up to the next '&'; when the userinfo's ':' lies in such a value,
# the value runs on to the first '&' after the userinfo's '@' (or the end), so that a
# second pass changes nothing. Byte-wise (LC_ALL=C), as the Rust one.
redact() {
  local LC_ALL=C
  local url=$1 begin=0 rest head user key val vs ve c i=0 start=1 m j ts te s e out="" pos=0 ms=-1 me=-1
  local ucolon=-1 uat=-1
  local re_scheme='^[A-Za-z][A-Za-z0-9+.-]*://' re_key='^([A-Za-z0-9_.-]*)=' re_secret='(password|passwd|pass|pwd|token|secret)$'
  local -a starts=() ends=()
  if [[ $url =~ $re_scheme ]]; then begin=${#BASH_REMATCH[0]}; fi
  rest=${url:begin}
  if [[ $rest == *@* ]]; then
    head=${rest%@*}
    if [[ $head == *:* ]]; then
      user=${head%%:*}
      ucolon=$((begin + ${#user})); uat=$((begin + ${#head}))
      starts+=($((ucolon + 1))); ends+=($uat)
    fi
  fi
  while (( i < ${#url} )); do
    if (( start )) && [[ ${url:i} =~ $re_key ]]; then
      key=${BASH_REMATCH[1]}
      if [[ ${key,,} =~ $re_secret ]]; then
        vs=$((i + ${#key} + 1))
        val=${url:vs}; val=${val%%&*}; ve=$((vs + ${#val}))
        if (( ucolon >= vs && ucolon < ve )); then
          val=${url:uat}; val=${val%%&*}; ve=$((uat + ${#val}))
        fi
        starts+=($vs); ends+=($ve)
        i=$ve; start=0
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

# --- The opt-in cluster: a Redis Cluster and a PostgreSQL streaming replica ---------------
# Six cluster nodes (3 masters, 3 replicas) on the first free ports from 7000 whose bus
# port (port + 10000) is free too, and a hot-standby replica of the server at DATABASE_URL
# on the first free port from 5440. The ports are remembered in the state folder, so a
# second call finds the same servers. Nodes are told each other dead after
# CLUSTER_NODE_TIMEOUT_MS (default 3000), so failover tests do not wait long.
CLUSTER_NODE_TIMEOUT_MS="${CLUSTER_NODE_TIMEOUT_MS:-3000}"
CLUSTER_PORTS=()
CLUSTER_WHY=""
REPLICA_PORT=5440

cluster_dir() {
  local d=$state/redis-cluster
  # redis-server changes into --dir, so every path it is given must be absolute.
  [[ $d == /* ]] || d=$PWD/$d
  printf '%s' "$d"
}

# One caller at a time, as for `tls`; servers are started with `9>&-`, so the lock ends
# with this script.
cluster_lock() {
  mkdir -p "$state"
  if command -v flock >/dev/null; then
    exec 9>"$state/cluster.lock"
    flock -w "$((WAIT_SECS * 4))" 9 || die "another 'services.sh cluster...' holds $state/cluster.lock for too long"
  fi
}

# Every client call is bounded: a port held by something that never answers must not hang us.
ccli() { local p=$1; shift; timeout 5 redis-cli -h 127.0.0.1 -p "$p" "$@" 2>/dev/null; }
cpsql() { PGCONNECT_TIMEOUT=5 timeout 20 psql "$@"; }

cluster_node_pings() { [ "$(ccli "$1" ping)" = PONG ]; }
# A node is ours when it answers with the id its nodes.conf in our folder gives itself.
cluster_node_ours() {
  local have want
  have=$(ccli "$1" cluster myid) || return 1
  want=$(awk '/myself/ { print $1; exit }' "$(cluster_dir)/$1/nodes.conf" 2>/dev/null)
  [ -n "$have" ] && [ "$have" = "$want" ]
}

# The recorded ports (6, each checked), or nothing.
cluster_recorded_ports() {
  local -a ports=()
  local p
  [ -f "$(cluster_dir)/ports" ] || return 1
  read -ra ports <"$(cluster_dir)/ports" || return 1
  [ ${#ports[@]} = 6 ] || return 1
  for p in "${ports[@]}"; do valid_port "$p" || return 1; done
  CLUSTER_PORTS=("${ports[@]}")
}

cluster_pick_ports() {
  local p
  CLUSTER_PORTS=()
  for ((p = 7000; p < 8000 && ${#CLUSTER_PORTS[@]} < 6; p++)); do
    port_open 127.0.0.1 "$p" || port_open 127.0.0.1 $((p + 10000)) || CLUSTER_PORTS+=("$p")
  done
  [ ${#CLUSTER_PORTS[@]} = 6 ] || die "fewer than 6 free ports (with their bus port + 10000) from 7000 to 7999 for the Redis Cluster"
}

# A replica's first sync starts at once (the default waits 5 s for more replicas).
cluster_start_node() {
  local p=$1 d
  d="$(cluster_dir)/$p"
  mkdir -p "$d"
  redis-server --bind 127.0.0.1 --port "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout "$CLUSTER_NODE_TIMEOUT_MS" --appendonly no --save '' --daemonize yes \
    --repl-diskless-sync-delay 0 \
    --dir "$d" --pidfile "$d/redis.pid" --logfile "$d/server.log" >/dev/null 9>&- \
    || die "the Redis Cluster node on port $p did not start (log: $d/server.log)"
}

# The pid of our node on port $1 when it runs (redis-server names its port in its title).
cluster_node_pid() {
  local pid
  pid=$(cat "$(cluster_dir)/$1/redis.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "redis-server .*:$1\b" || return 1
  printf '%s' "$pid"
}

# Healthy: every node says cluster_state:ok with all 16384 slots assigned and served and
# all 6 nodes known; no node is marked failing; 3 masters serve slots, and each has a
# replica whose sync is done (state=online). Otherwise CLUSTER_WHY says what is missing.
cluster_healthy() {
  local p info nodes line id addr flags mport masters=0 repl
  for p in "${CLUSTER_PORTS[@]}"; do
    info=$(ccli "$p" cluster info) || { CLUSTER_WHY="node $p does not answer"; return 1; }
    info=${info//$'\r'/}
    for line in cluster_state:ok cluster_slots_assigned:16384 cluster_slots_ok:16384 cluster_known_nodes:6; do
      grep -qx "$line" <<<"$info" || { CLUSTER_WHY="node $p: no $line in CLUSTER INFO"; return 1; }
    done
  done
  nodes=$(ccli "${CLUSTER_PORTS[0]}" cluster nodes) || { CLUSTER_WHY="node ${CLUSTER_PORTS[0]} does not answer CLUSTER NODES"; return 1; }
  while read -r id addr flags _ _ _ _ _ line; do
    [ -n "$id" ] || continue
    [[ $flags == *fail* ]] && { CLUSTER_WHY="node $addr is marked $flags"; return 1; }
    [[ $flags == *master* && -n $line ]] || continue
    masters=$((masters + 1))
    mport=${addr#*:}; mport=${mport%%@*}
    repl=$(ccli "$mport" info replication) || { CLUSTER_WHY="master $mport does not answer"; return 1; }
    grep -q '^slave[0-9]*:.*state=online' <<<"${repl//$'\r'/}" || { CLUSTER_WHY="master $mport has no replica in sync"; return 1; }
  done <<<"${nodes//$'\r'/}"
  [ "$masters" = 3 ] || { CLUSTER_WHY="$masters masters serve slots, not 3"; return 1; }
  CLUSTER_WHY=""
}

# Like wait_for, without its log line.
wait_until() {
  local deadline=$((SECONDS + WAIT_SECS))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

cluster_wait_healthy() {
  wait_until cluster_healthy || return 1
  log "the Redis Cluster on 127.0.0.1 ports ${CLUSTER_PORTS[*]} is healthy (3 masters, each with a replica in sync)"
}

cluster_stop_redis() {
  local dir d p pid deadline
  dir=$(cluster_dir)
  [ -d "$dir" ] || return 0
  for d in "$dir"/*/; do
    p=$(basename "$d")
    valid_port "$p" || continue
    pid=$(cluster_node_pid "$p") || continue
    log "stopping the Redis Cluster node on port $p (pid $pid)"
    kill "$pid" 2>/dev/null || true
    deadline=$((SECONDS + WAIT_SECS))
    while kill -0 "$pid" 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || { kill -9 "$pid" 2>/dev/null || true; break; }
      sleep 0.1
    done
  done
  rm -rf -- "$dir"
}

cluster_create() {
  local dir p addrs=()
  dir=$(cluster_dir)
  rm -rf -- "$dir"
  mkdir -p "$dir"
  cluster_pick_ports
  printf '%s\n' "${CLUSTER_PORTS[*]}" >"$dir/ports"
  for p in "${CLUSTER_PORTS[@]}"; do
    log "starting a Redis Cluster node on 127.0.0.1:$p"
    cluster_start_node "$p"
    addrs+=("127.0.0.1:$p")
  done
  for p in "${CLUSTER_PORTS[@]}"; do
    wait_for "the Redis Cluster node 127.0.0.1:$p" cluster_node_pings "$p" \
      || die "the Redis Cluster node on port $p does not answer (log: $dir/$p/server.log)"
  done
  log "joining ${addrs[*]} into a cluster (3 masters, 1 replica each)"
  timeout "$((WAIT_SECS * 2))" redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >"$dir/create.log" 2>&1 || { tail -n 20 "$dir/create.log" >&2; die "redis-cli --cluster create failed (log: $dir/create.log)"; }
  cluster_wait_healthy || die "the Redis Cluster did not become healthy within ${WAIT_SECS}s: $CLUSTER_WHY (logs: $dir/*/server.log)"
}

# Reuse our running cluster (restarting any of its nodes that is down, from its config);
# otherwise make a new one.
start_cluster_redis() {
  local dir p held=""
  local -a down=()
  dir=$(cluster_dir)
  if cluster_recorded_ports; then
    for p in "${CLUSTER_PORTS[@]}"; do
      if [ ! -s "$dir/$p/nodes.conf" ]; then held="port $p has no nodes.conf"; break; fi
      cluster_node_ours "$p" && continue
      if port_open 127.0.0.1 "$p" || port_open 127.0.0.1 $((p + 10000)); then
        held="port $p is held by $(holder "$p") (not our node)"; break
      fi
      down+=("$p")
    done
    if [ -z "$held" ]; then
      for p in "${down[@]}"; do
        log "restarting the Redis Cluster node on 127.0.0.1:$p from its config"
        cluster_start_node "$p"
      done
      for p in "${down[@]}"; do
        wait_for "the Redis Cluster node 127.0.0.1:$p" cluster_node_pings "$p" || { held="node $p does not come back"; break; }
      done
      if [ -z "$held" ]; then
        cluster_wait_healthy && return 0
        held="not healthy within ${WAIT_SECS}s: $CLUSTER_WHY"
      fi
    fi
    log "the recorded Redis Cluster cannot be reused ($held): making a new one"
    cluster_stop_redis
  fi
  cluster_create
}

# --- The PostgreSQL replica ---
# Sets the primary's parts from DATABASE_URL (checked as in start_postgres).
PRIMARY_HOST="" PRIMARY_PORT="" PRIMARY_USER="" PRIMARY_DB=""
replica_primary() {
  PRIMARY_HOST=$(url_host "$DATABASE_URL"); PRIMARY_PORT=$(url_port "$DATABASE_URL" 5432)
  valid_port "$PRIMARY_PORT" || die "the port in DATABASE_URL $(redact "$DATABASE_URL") is not a number from 1 to 65535"
  PRIMARY_PORT=$((10#$PRIMARY_PORT))
  PRIMARY_USER=$(url_user "$DATABASE_URL"); PRIMARY_USER=${PRIMARY_USER:-postgres}
  PRIMARY_DB=$(url_db "$DATABASE_URL"); PRIMARY_DB=${PRIMARY_DB:-$PRIMARY_USER}
  [[ $PRIMARY_USER =~ ^[a-z_][a-z0-9_]*$ ]] || die "database user '$PRIMARY_USER' in DATABASE_URL is not a plain identifier"
  [[ $PRIMARY_DB =~ ^[a-z_][a-z0-9_]*$ ]] || die "database name '$PRIMARY_DB' in DATABASE_URL is not a plain identifier"
  [[ $PRIMARY_HOST =~ ^[A-Za-z0-9.:_-]+$ ]] || die "the host in DATABASE_URL $(redact "$DATABASE_URL") is not a plain host name"
}
replica_url() { printf 'postgres://%s@127.0.0.1:%s/%s' "$PRIMARY_USER" "$REPLICA_PORT" "${1:-$PRIMARY_DB}"; }
primary_url_db() { printf 'postgres://%s@%s:%s/%s' "$PRIMARY_USER" "$PRIMARY_HOST" "$PRIMARY_PORT" "$1"; }
primary_repl_conn() { printf 'host=%s port=%s user=%s replication=true' "$PRIMARY_HOST" "$PRIMARY_PORT" "$PRIMARY_USER"; }
# The primary's system identifier over a replication connection (so this also proves
# that pg_hba lets replication in).
primary_system_id() { cpsql "$(primary_repl_conn)" -Atqc 'IDENTIFY_SYSTEM' 2>/dev/null | cut -d'|' -f1; }
primary_allows_replication() { [ -n "$(primary_system_id)" ]; }

# The default server made by this script is ours to configure: add a replication line to
# its pg_hba.conf once, and reload. A server we did not make is left alone.
primary_allow_replication() {
  local pgdir dd hba
  primary_allows_replication && return 0
  pgdir=$(cat "$state/pg.path" 2>/dev/null || printf '%s' "$state/pg")
  dd=$(cpsql "$DATABASE_URL" -Atqc 'show data_directory' 2>/dev/null) || dd=""
  hba=$pgdir/data/pg_hba.conf
  if [ "$dd" = "$pgdir/data" ] && [ -f "$hba" ] && ! grep -qE '^host[[:space:]]+replication[[:space:]]' "$hba"; then
    log "allowing replication connections from 127.0.0.1 in $hba"
    printf 'host replication all 127.0.0.1/32 trust\n' >>"$hba"
    cpsql "$DATABASE_URL" -Atqc 'select pg_reload_conf()' >/dev/null || die "could not reload the PostgreSQL configuration"
  fi
  wait_for "replication at $(redact "$DATABASE_URL")" primary_allows_replication \
    || die "PostgreSQL at $(redact "$DATABASE_URL") refuses replication connections for '$PRIMARY_USER': it needs a 'host replication' line in pg_hba.conf, the REPLICATION attribute and max_wal_senders > 0"
}

replica_in_recovery() { [ "$(cpsql "$(replica_url)" -Atqc 'select pg_is_in_recovery()' 2>/dev/null)" = t ]; }
replica_ours() { [ "$(cpsql "$(replica_url postgres)" -Atqc 'show data_directory' 2>/dev/null)" = "$1/data" ]; }

replica_pick_port() { # replica folder
  local last='' i
  REPLICA_PORT=5440
  if [ -f "$state/pg-replica.port" ] && read -r last <"$state/pg-replica.port" && valid_port "$last"; then
    REPLICA_PORT=$((10#$last))
  fi
  for ((i = 0; i < 100; i++)); do
    port_open 127.0.0.1 "$REPLICA_PORT" || break
    replica_ours "$1" && break
    REPLICA_PORT=$((REPLICA_PORT + 1))
  done
  printf '%s\n' "$REPLICA_PORT" >"$state/pg-replica.port"
}

replica_stop_server() { # replica folder
  local bin
  bin=$(pg_bin) || true
  if [ -n "$bin" ] && [ -f "$1/data/postmaster.pid" ]; then
    log "stopping the PostgreSQL replica (pid $(head -n 1 "$1/data/postmaster.pid"))"
    as_pg "'$bin/pg_ctl' -D '$1/data' -m fast -w -t '$WAIT_SECS' stop" >/dev/null 2>&1 || log "pg_ctl stop failed"
  fi
}

# A row written on the primary (in its `postgres` database, away from the tests' tables)
# must show on the replica.
replica_probe_seen() { [ "$(cpsql "$(replica_url postgres)" -Atqc 'select token from cortex_replica_probe where id = 1' 2>/dev/null)" = "$1" ]; }

start_replica() {
  local bin dir sysid have setting value opts="" token
  replica_primary
  pg_answers || die "PostgreSQL does not answer at $(redact "$DATABASE_URL"): run 'eval \"\$(scripts/services.sh)\"' first"
  bin=$(pg_bin) || true
  [ -n "$bin" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  primary_allow_replication
  sysid=$(primary_system_id)
  dir=$(pg_dir pg-replica)
  replica_pick_port "$dir"
  # A replica of an older primary (made again since) cannot follow this one: start over.
  if [ -s "$dir/data/PG_VERSION" ]; then
    have=$("$bin/pg_controldata" -D "$dir/data" 2>/dev/null | sed -n 's/^Database system identifier: *//p')
    if [ "$have" != "$sysid" ]; then
      log "the replica in $dir/data belongs to another primary: making it again"
      replica_stop_server "$dir"
      rm -rf -- "$dir/data"
    fi
  fi
  # A replica that was down while the primary recycled its WAL can never catch up
  # (it asks for a segment that is gone, every 5 s): start over.
  if [ -f "$dir/server.log" ] && tail -n 3 "$dir/server.log" | grep -q 'requested WAL segment .* has already been removed'; then
    log "the replica in $dir/data fell behind the primary's WAL: making it again"
    replica_stop_server "$dir"
    rm -rf -- "$dir/data"
    : >"$dir/server.log"
  fi
  if replica_ours "$dir"; then
    log "the PostgreSQL replica already answers at $(replica_url)"
  else
    if [ ! -f "$dir/data/standby.signal" ]; then
      rm -rf -- "$dir/data"
      log "copying the primary at $(redact "$DATABASE_URL") into $dir/data (pg_basebackup)"
      as_pg "timeout $((WAIT_SECS * 10)) '$bin/pg_basebackup' -h '$PRIMARY_HOST' -p $PRIMARY_PORT -U '$PRIMARY_USER' \
        -D '$dir/data' -R -X stream -c fast -N" >"$dir/basebackup.log" 2>&1 \
        || { tail -n 20 "$dir/basebackup.log" >&2; die "pg_basebackup failed or took over $((WAIT_SECS * 10))s (log: $dir/basebackup.log)"; }
    fi
    # A hot standby refuses to start with less of these than its primary has.
    for setting in max_connections max_worker_processes max_wal_senders max_prepared_transactions max_locks_per_transaction; do
      value=$(cpsql "$DATABASE_URL" -Atqc "show $setting") || die "could not read $setting from the primary"
      [[ $value =~ ^[0-9]+$ ]] || die "the primary's $setting '$value' is not a number"
      opts+=" -c $setting=$value"
    done
    value=$(cpsql "$DATABASE_URL" -Atqc 'show shared_preload_libraries') || value=""
    [[ $value =~ ^[a-z0-9_,\ ]*$ ]] || die "the primary's shared_preload_libraries '$value' is not a plain list"
    value=${value// /}
    [ -z "$value" ] || opts+=" -c shared_preload_libraries=$value"
    if port_open 127.0.0.1 "$REPLICA_PORT"; then
      die "port $REPLICA_PORT on 127.0.0.1 is held by something that is not our replica: $(holder "$REPLICA_PORT")"
    fi
    log "starting the PostgreSQL replica on 127.0.0.1:$REPLICA_PORT"
    as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t '$WAIT_SECS' \
      -o \"-c listen_addresses=127.0.0.1 -p $REPLICA_PORT -c unix_socket_directories='$dir' -c hot_standby=on \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off$opts\" start" \
      >/dev/null 9>&- || { tail -n 20 "$dir/server.log" >&2; die "the PostgreSQL replica did not start (log: $dir/server.log)"; }
    touch "$dir/started-by-us"
  fi
  wait_for "the PostgreSQL replica at $(replica_url) (in recovery)" replica_in_recovery \
    || die "the PostgreSQL replica at $(replica_url) is not in recovery within ${WAIT_SECS}s (log: $dir/server.log)"
  token="$(date +%s%N)-$$"
  cpsql "$(primary_url_db postgres)" -Atq -v ON_ERROR_STOP=1 -c 'set client_min_messages = warning' \
    -c 'create table if not exists cortex_replica_probe (id int primary key, token text not null)' \
    -c "insert into cortex_replica_probe values (1, '$token') on conflict (id) do update set token = excluded.token" \
    >/dev/null || die "could not write the probe row on the primary"
  wait_until replica_probe_seen "$token" \
    || die "a row written on the primary did not reach the replica at $(replica_url) within ${WAIT_SECS}s; 'scripts/services.sh cluster-stop' then 'cluster' makes it again (log: $dir/server.log)"
  log "the PostgreSQL replica at $(replica_url) streams from the primary (a row written there shows)"
}

stop_replica() {
  local dir
  dir=$(cat "$state/pg-replica.path" 2>/dev/null || printf '%s' "$state/pg-replica")
  if [ -d "$dir" ]; then
    replica_stop_server "$dir"
    # Only a folder this script made: ours under the state folder or from mktemp.
    if [[ $dir == "$state/pg-replica" || $dir == /tmp/cortex-services.* ]] && pg_dir_ours "$dir"; then
      rm -rf -- "$dir"
    else
      log "not removing $dir: not a replica folder made here"
    fi
  fi
  rm -f "$state/pg-replica.path" "$state/pg-replica.port"
}

start_cluster() {
  local need=() p urls=() ports
  cluster_lock
  { [ -n "$(pg_bin)" ] && command -v psql >/dev/null; } || need+=(postgresql)
  { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; } || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ]; then install_packages "${need[@]}"; fi
  start_cluster_redis
  start_replica
  for p in "${CLUSTER_PORTS[@]}"; do urls+=("redis://127.0.0.1:$p"); done
  ports="${CLUSTER_PORTS[*]}"
  # Plain quotes: every part is checked (ports are numbers, user and database plain
  # identifiers), and %q would write each comma as '\,'.
  printf "export REDIS_CLUSTER_URLS='%s'\nexport REDIS_CLUSTER_PORTS='%s'\nexport DB_REPLICA_URLS='%s'\n" \
    "$(IFS=,; printf '%s' "${urls[*]}")" "${ports// /,}" "$(replica_url)"
}

stop_cluster() {
  cluster_lock
  cluster_stop_redis
  stop_replica
}

# The port $1, checked to be one of our cluster's nodes.
cluster_our_port() {
  valid_port "${1-}" || die "'${1-}' is not a port number (usage: services.sh cluster-kill|cluster-start PORT)"
  cluster_recorded_ports || die "no Redis Cluster recorded in $(cluster_dir): run 'scripts/services.sh cluster' first"
  local p
  for p in "${CLUSTER_PORTS[@]}"; do [ "$p" = "$((10#$1))" ] && return 0; done
  die "port $1 is not a node of our Redis Cluster (its ports: ${CLUSTER_PORTS[*]})"
}

# SIGKILL one node: no shutdown, no goodbye to the other nodes, as in a crash.
cluster_kill() {
  local p pid deadline
  cluster_lock
  cluster_our_port "${1-}"; p=$((10#$1))
  if ! pid=$(cluster_node_pid "$p"); then log "the Redis Cluster node on port $p is not running"; return 0; fi
  log "killing the Redis Cluster node on port $p (pid $pid, SIGKILL)"
  kill -9 "$pid"
  deadline=$((SECONDS + WAIT_SECS))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "pid $pid is still there ${WAIT_SECS}s after SIGKILL"
    sleep 0.1
  done
}

# Start one node again with its nodes.conf (it rejoins; a master that was failed over
# comes back as a replica). Waits until it answers, not until the cluster is healthy.
cluster_start() {
  local p
  cluster_lock
  cluster_our_port "${1-}"; p=$((10#$1))
  [ -s "$(cluster_dir)/$p/nodes.conf" ] || die "no nodes.conf for port $p in $(cluster_dir)/$p"
  if cluster_node_ours "$p"; then log "the Redis Cluster node on port $p already runs"; return 0; fi
  port_open 127.0.0.1 "$p" && die "port $p on 127.0.0.1 is held by something else: $(holder "$p")"
  log "starting the Redis Cluster node on 127.0.0.1:$p from its config"
  cluster_start_node "$p"
  wait_for "the Redis Cluster node 127.0.0.1:$p" cluster_node_ours "$p" \
    || die "the Redis Cluster node on port $p does not answer (log: $(cluster_dir)/$p/server.log)"
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
  cluster) start_cluster ;;
  cluster-stop) stop_cluster ;;
  cluster-kill) cluster_kill "${2-}" ;;
  cluster-start) cluster_start "${2-}" ;;
  *) die "unknown command '$1' (use start, stop, status, tls, tls-stop, cluster, cluster-stop, cluster-kill PORT or cluster-start PORT)" ;;
esac
