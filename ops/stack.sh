#!/usr/bin/env bash
# Local server stack for tierstream: a real Apache Kafka broker (KRaft, single
# combined broker+controller node, jars from Maven Central) and Debian's
# redis-server, both on loopback, all state under one folder.
#
#   bash ops/stack.sh install   fetch Kafka jars, apt-install redis-server/kcat and
#                               the test tools (prometheus, docker-compose)
#   bash ops/stack.sh up        install if needed, start, wait until really ready
#   bash ops/stack.sh status    one line per component; exit 0 only if both run
#   bash ops/stack.sh down      stop both (graceful first)
#   bash ops/stack.sh reset     down, then wipe data and logs (keeps the jars)
#
# One server at a time (fault injection: the chaos suite, tests/chaos/):
#
#   bash ops/stack.sh start SERVER     start kafka or redis, wait until it answers
#   bash ops/stack.sh stop SERVER      stop it gracefully (data kept)
#   bash ops/stack.sh kill SERVER      SIGKILL it: a crash (Redis loses what its AOF
#                                      had not synced yet, Kafka recovers its logs)
#   bash ops/stack.sh restart SERVER   stop, then start
#   bash ops/stack.sh redis-snapshot FILE   a point-in-time RDB copy of the running Redis
#   bash ops/stack.sh redis-restore FILE    stop Redis, replace its data with the RDB in
#                                           FILE (older state: a rollback), start it
#
# See ops/README.md for the environment overrides.
set -euo pipefail

PROG=ops/stack.sh
OPS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$OPS_DIR/.." && pwd)

KAFKA_PORT=${TIERSTREAM_STACK_KAFKA_PORT:-9092}
CONTROLLER_PORT=${TIERSTREAM_STACK_CONTROLLER_PORT:-9093}
REDIS_PORT=${TIERSTREAM_STACK_REDIS_PORT:-6379}
STACK_DIR=${TIERSTREAM_STACK_DIR:-$REPO_DIR/.stack}
FRESH=${TIERSTREAM_STACK_FRESH:-0}
# 2 cores, cold JIT: Kafka usually starts in a few seconds, but a loaded CI
# machine can be far slower, and a slow start is not a failed one.
KAFKA_START_TIMEOUT=${TIERSTREAM_STACK_KAFKA_TIMEOUT:-120}
REDIS_START_TIMEOUT=30
STOP_TIMEOUT=30

KAFKA_HEAP_OPTS=(-Xms256m -Xmx512m)

# log, die, launch, live_pid, fetch_kafka_libs, take_lock...: shared with
# ops/cluster-stack.sh.
# shellcheck source=ops/stack-lib.sh
source "$OPS_DIR/stack-lib.sh"

for _p in "$KAFKA_PORT" "$CONTROLLER_PORT" "$REDIS_PORT"; do
  if ! [[ $_p =~ ^[0-9]+$ ]] || ((_p < 1 || _p > 65535)); then
    die "invalid port '$_p' in TIERSTREAM_STACK_*_PORT"
  fi
done
(( KAFKA_PORT != CONTROLLER_PORT )) || die "TIERSTREAM_STACK_KAFKA_PORT and TIERSTREAM_STACK_CONTROLLER_PORT must differ"

# Absolute, because the servers run with their own working directory and the
# paths end up in their command lines and config files.
mkdir -p "$STACK_DIR"
STACK_DIR=$(cd "$STACK_DIR" && pwd)

# The jars are a cache, not state: a separate override lets CI or throwaway
# stack dirs share one copy instead of fetching again.
KAFKA_LIBS=${TIERSTREAM_STACK_KAFKA_LIBS:-$STACK_DIR/kafka-libs}
KAFKA_DATA=$STACK_DIR/kafka-data
REDIS_DATA=$STACK_DIR/redis-data
KAFKA_LOGS=$STACK_DIR/logs/kafka
REDIS_LOGS=$STACK_DIR/logs/redis
RUN_DIR=$STACK_DIR/run

KAFKA_POM=$OPS_DIR/kafka/pom.xml
KAFKA_TEMPLATE=$OPS_DIR/kafka/server.properties.template
KAFKA_LOG4J=$OPS_DIR/kafka/log4j2.properties
REDIS_CONF=$OPS_DIR/redis/redis.conf

KAFKA_PROPS=$RUN_DIR/kafka-server.properties
KAFKA_PIDFILE=$RUN_DIR/kafka.pid
KAFKA_PORTFILE=$RUN_DIR/kafka.ports
REDIS_PIDFILE=$RUN_DIR/redis.pid
REDIS_PORTFILE=$RUN_DIR/redis.port
KAFKA_SERVER_LOG=$KAFKA_LOGS/server.log
KAFKA_STDOUT=$KAFKA_LOGS/kafka.out
REDIS_LOG=$REDIS_LOGS/redis.log

# ---------------------------------------------------------------- helpers ---

# live_pid (ops/stack-lib.sh) checks the command line too, so a recycled pid
# is never taken for our server.
kafka_pid() { live_pid "$KAFKA_PIDFILE" "kafka.Kafka $KAFKA_PROPS"; }
redis_pid() { live_pid "$REDIS_PIDFILE" redis-server; }

# ---------------------------------------------------------- prerequisites ---

cmd_install() {
  check_java
  ensure_apt_packages
  fetch_kafka_libs
  log "install done (Kafka jars in $KAFKA_LIBS)"
}

# ------------------------------------------------------------------ kafka ---

render_kafka_props() {
  local text
  text=$(<"$KAFKA_TEMPLATE")
  # Quoted replacements: bash 5.2 otherwise treats '&' in them as the match.
  text=${text//@KAFKA_PORT@/"$KAFKA_PORT"}
  text=${text//@CONTROLLER_PORT@/"$CONTROLLER_PORT"}
  text=${text//@DATA_DIR@/"$KAFKA_DATA"}
  printf '%s\n' "$text" >"$KAFKA_PROPS"
}

# Formatting only when meta.properties is missing keeps topics, offsets and
# the cluster id across down/up.
format_kafka_if_needed() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  mkdir -p "$KAFKA_DATA"
  local cluster_id
  cluster_id=$(new_cluster_id)
  log "formatting a new Kafka log dir $KAFKA_DATA (cluster id $cluster_id)"
  # No --standalone: the template uses a static quorum (controller.quorum.voters)
  # so the data dir is not tied to one controller port; see the template.
  kafka_java_cmd
  if ! "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_PROPS" \
      >"$KAFKA_LOGS/format.log" 2>&1; then
    show_tail "$KAFKA_LOGS/format.log"
    die "formatting the Kafka log dir failed"
  fi
}

# Sets KAFKA_LOG_OFFSET for kafka_wait_ready; empty when we did not start it.
KAFKA_LOG_OFFSET=
start_kafka() {
  local pid
  if pid=$(kafka_pid); then
    local ports
    ports=$(cat "$KAFKA_PORTFILE" 2>/dev/null || true)
    [[ $ports == "$KAFKA_PORT $CONTROLLER_PORT" ]] ||
      die "kafka already running (pid $pid) on ports ${ports:-unknown}, not $KAFKA_PORT $CONTROLLER_PORT: run '$PROG down' first to change ports"
    log "kafka already running (pid $pid, port $KAFKA_PORT)"
    return 0
  fi
  local p
  for p in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
    port_in_use "$p" &&
      die "port $p on 127.0.0.1 is taken by a process this script did not start: stop it, or set TIERSTREAM_STACK_KAFKA_PORT / TIERSTREAM_STACK_CONTROLLER_PORT"
  done
  mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS" "$RUN_DIR"
  render_kafka_props
  format_kafka_if_needed
  # The server log is appended across runs: only lines after this offset can
  # be this start's "Kafka Server started".
  KAFKA_LOG_OFFSET=$(stat -c %s "$KAFKA_SERVER_LOG" 2>/dev/null || echo 0)
  : >"$KAFKA_STDOUT"
  printf '%s %s\n' "$KAFKA_PORT" "$CONTROLLER_PORT" >"$KAFKA_PORTFILE"
  kafka_java_cmd
  launch "$KAFKA_PIDFILE" "$KAFKA_STDOUT" "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_PROPS"
  log "kafka starting (pid $(<"$KAFKA_PIDFILE"), port $KAFKA_PORT, controller $CONTROLLER_PORT)"
}

kafka_started_logged() {
  [[ -z $KAFKA_LOG_OFFSET ]] && return 0   # already running before this call
  [[ -f $KAFKA_SERVER_LOG ]] || return 1
  local size
  size=$(stat -c %s "$KAFKA_SERVER_LOG")
  # A smaller file means log4j rolled it over meanwhile: search all of it.
  ((size >= KAFKA_LOG_OFFSET)) || KAFKA_LOG_OFFSET=0
  tail -c "+$((KAFKA_LOG_OFFSET + 1))" "$KAFKA_SERVER_LOG" | grep -q 'Kafka Server started'
}

# "Kafka Server started" alone is not enough for clients: the metadata
# round trip proves the listener answers and the broker is registered.
kafka_answers() {
  kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 5 2>/dev/null | grep -q "broker 1 at 127.0.0.1:$KAFKA_PORT"
}

kafka_wait_ready() {
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT)) pid
  while :; do
    if ! pid=$(kafka_pid); then
      show_tail "$KAFKA_SERVER_LOG" "$KAFKA_STDOUT"
      die "kafka exited during start-up (logs: $KAFKA_LOGS)"
    fi
    if kafka_started_logged && kafka_answers; then
      log "kafka ready on 127.0.0.1:$KAFKA_PORT (pid $pid)"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      show_tail "$KAFKA_SERVER_LOG" "$KAFKA_STDOUT"
      die "kafka not ready after ${KAFKA_START_TIMEOUT}s (still running as pid $pid; '$PROG down' stops it; logs: $KAFKA_LOGS)"
    fi
    sleep 0.5
  done
}

stop_kafka() {
  local pid
  if ! pid=$(kafka_pid); then
    rm -f "$KAFKA_PIDFILE" "$KAFKA_PORTFILE"
    log "kafka not running"
    return 0
  fi
  log "stopping kafka (pid $pid)"
  # SIGTERM runs Kafka's shutdown hook: it closes the logs cleanly, so the
  # next start skips log recovery.
  kill -TERM "$pid" 2>/dev/null || true
  wait_exit_or_kill kafka "$pid"
  rm -f "$KAFKA_PIDFILE" "$KAFKA_PORTFILE"
}

# ------------------------------------------------------------------ redis ---

start_redis() {
  local pid
  if pid=$(redis_pid); then
    local port
    port=$(cat "$REDIS_PORTFILE" 2>/dev/null || true)
    [[ $port == "$REDIS_PORT" ]] ||
      die "redis already running (pid $pid) on port ${port:-unknown}, not $REDIS_PORT: run '$PROG down' first to change ports"
    log "redis already running (pid $pid, port $REDIS_PORT)"
    return 0
  fi
  port_in_use "$REDIS_PORT" &&
    die "port $REDIS_PORT on 127.0.0.1 is taken by a process this script did not start (a system redis-server? 'systemctl disable --now redis-server'), or set TIERSTREAM_STACK_REDIS_PORT"
  mkdir -p "$REDIS_DATA" "$REDIS_LOGS" "$RUN_DIR"
  printf '%s\n' "$REDIS_PORT" >"$REDIS_PORTFILE"
  launch "$REDIS_PIDFILE" "$REDIS_LOGS/redis.out" redis-server "$REDIS_CONF" \
    --port "$REDIS_PORT" --dir "$REDIS_DATA" --logfile "$REDIS_LOG"
  log "redis starting (pid $(<"$REDIS_PIDFILE"), port $REDIS_PORT)"
}

# PING answers LOADING while a large AOF replays, so only PONG counts.
redis_wait_ready() {
  local deadline=$((SECONDS + REDIS_START_TIMEOUT)) pid
  while :; do
    if ! pid=$(redis_pid); then
      show_tail "$REDIS_LOG" "$REDIS_LOGS/redis.out"
      die "redis exited during start-up (logs: $REDIS_LOGS)"
    fi
    if [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
      log "redis ready on 127.0.0.1:$REDIS_PORT (pid $pid)"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      show_tail "$REDIS_LOG" "$REDIS_LOGS/redis.out"
      die "redis not ready after ${REDIS_START_TIMEOUT}s (pid $pid; logs: $REDIS_LOGS)"
    fi
    sleep 0.2
  done
}

stop_redis() {
  local pid port
  if ! pid=$(redis_pid); then
    rm -f "$REDIS_PIDFILE" "$REDIS_PORTFILE"
    log "redis not running"
    return 0
  fi
  port=$(cat "$REDIS_PORTFILE" 2>/dev/null || true)
  log "stopping redis (pid $pid)"
  # SHUTDOWN fsyncs the AOF before exiting; SIGTERM does the same if the
  # port is unknown or the server does not answer.
  if [[ -z $port ]] || ! redis-cli -p "$port" shutdown >/dev/null 2>&1; then
    kill -TERM "$pid" 2>/dev/null || true
  fi
  wait_exit_or_kill redis "$pid"
  rm -f "$REDIS_PIDFILE" "$REDIS_PORTFILE"
}

# --------------------------------------------------------------- commands ---

cmd_down() {
  stop_kafka
  stop_redis
}

# Removes only the folders this script creates, never $STACK_DIR itself, so
# a mistaken TIERSTREAM_STACK_DIR cannot wipe anything else. The jar cache
# stays: it is not state.
cmd_reset() {
  cmd_down
  log "wiping data and logs under $STACK_DIR"
  rm -rf "$KAFKA_DATA" "$REDIS_DATA" "$STACK_DIR/logs" "$KAFKA_PROPS" \
    "$KAFKA_PIDFILE" "$KAFKA_PORTFILE" "$REDIS_PIDFILE" "$REDIS_PORTFILE"
}

cmd_up() {
  # Everything that can fail for a missing tool fails before anything starts.
  check_java
  ensure_apt_packages
  fetch_kafka_libs
  if [[ $FRESH == 1 ]]; then cmd_reset; fi
  # Kafka first: it is the slow one, redis starts while the JVM warms up.
  start_kafka
  start_redis
  redis_wait_ready
  kafka_wait_ready
}

cmd_status() {
  local pid ok=0 ports kp cp
  if pid=$(kafka_pid); then
    read -r kp cp <"$KAFKA_PORTFILE" 2>/dev/null || { kp='?'; cp='?'; }
    if port_in_use "$kp"; then
      echo "kafka: running (pid $pid, port $kp, controller $cp)"
    else
      echo "kafka: running but not listening yet (pid $pid, port $kp, controller $cp)"
      ok=1
    fi
  else
    echo "kafka: stopped (port $KAFKA_PORT, controller $CONTROLLER_PORT)"
    ok=1
  fi
  if pid=$(redis_pid); then
    ports=$(cat "$REDIS_PORTFILE" 2>/dev/null || echo '?')
    echo "redis: running (pid $pid, port $ports)"
  else
    echo "redis: stopped (port $REDIS_PORT)"
    ok=1
  fi
  return "$ok"
}

# ----------------------------------------------------------- one server ---

# SIGKILL: what a crash or an OOM kill does. Redis loses the writes its AOF had
# not fsynced yet (appendfsync everysec: up to about a second); Kafka recovers
# its log segments on the next start.
kill_server() {
  local name=$1 pid
  if ! pid=$("${name}_pid"); then
    log "$name not running"
    return 0
  fi
  log "killing $name (pid $pid) with SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do running "$pid" || break; sleep 0.1; done
  running "$pid" && die "$name (pid $pid) did not die after SIGKILL"
  if [[ $name == kafka ]]; then
    rm -f "$KAFKA_PIDFILE" "$KAFKA_PORTFILE"
  else
    rm -f "$REDIS_PIDFILE" "$REDIS_PORTFILE"
  fi
}

cmd_server() {
  local action=$1 name=$2
  [[ $name == kafka || $name == redis ]] || usage
  case $action in
    start)
      if [[ $name == kafka ]]; then
        check_java
        fetch_kafka_libs
        start_kafka
        kafka_wait_ready
      else
        command -v redis-server >/dev/null 2>&1 || die "redis-server not found: run '$PROG install'"
        start_redis
        redis_wait_ready
      fi
      ;;
    stop) "stop_$name" ;;
    kill) kill_server "$name" ;;
    restart)
      "stop_$name"
      cmd_server start "$name"
      ;;
  esac
}

# `redis-cli --rdb` takes the snapshot over the replication protocol: a
# consistent point in time, with no RDB file written into the data dir.
cmd_redis_snapshot() {
  local file=$1 pid
  pid=$(redis_pid) || die "redis is not running: nothing to snapshot"
  mkdir -p "$(dirname "$file")"
  if ! redis-cli -p "$(<"$REDIS_PORTFILE")" --rdb "$file" >/dev/null 2>&1 || [[ ! -s $file ]]; then
    die "could not take an RDB snapshot of redis (pid $pid) into $file"
  fi
  log "redis snapshot written to $file ($(stat -c %s "$file") bytes)"
}

# Redis 7 with appendonly loads only its AOF directory, never a dump.rdb beside
# it, so the snapshot becomes the base of a fresh multi-part AOF (the layout
# Redis writes itself: a base RDB, an empty incremental file, a manifest).
cmd_redis_restore() {
  local file=$1
  [[ -r $file && $(head -c 5 "$file") == REDIS ]] || die "$file is not an RDB file (make one with '$PROG redis-snapshot FILE')"
  file=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")
  stop_redis
  local aof=$REDIS_DATA/appendonlydir
  log "replacing redis data under $REDIS_DATA with $file"
  rm -rf "$aof" "$REDIS_DATA/dump.rdb"
  mkdir -p "$aof"
  cp "$file" "$aof/appendonly.aof.1.base.rdb"
  : >"$aof/appendonly.aof.1.incr.aof"
  printf 'file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n' \
    >"$aof/appendonly.aof.manifest"
  start_redis
  redis_wait_ready
}

usage() {
  echo "usage: bash $PROG {up|down|status|install|reset}" >&2
  echo "       bash $PROG {start|stop|kill|restart} {kafka|redis}" >&2
  echo "       bash $PROG {redis-snapshot|redis-restore} FILE" >&2
  exit 2
}

case $# in
  1) ;;
  2) [[ $1 =~ ^(start|stop|kill|restart|redis-snapshot|redis-restore)$ ]] || usage ;;
  *) usage ;;
esac
case $1 in
  up) take_lock; cmd_up ;;
  down) take_lock; cmd_down ;;
  reset) take_lock; cmd_reset ;;
  install) take_lock; cmd_install ;;
  status) cmd_status ;;
  start | stop | kill | restart) (($# == 2)) || usage; take_lock; cmd_server "$1" "$2" ;;
  redis-snapshot) (($# == 2)) || usage; take_lock; cmd_redis_snapshot "$2" ;;
  redis-restore) (($# == 2)) || usage; take_lock; cmd_redis_restore "$2" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
