#!/usr/bin/env bash
# Local multi-node stack for tierstream, all on loopback, all state under
# .stack-cluster/: a 3-node KRaft Apache Kafka cluster (every node broker and
# controller) with SASL_SSL/SCRAM client listeners, and a 6-node Redis Cluster
# (3 primaries, 3 replicas). For failover and security tests; the everyday
# single-node stack is ops/stack.sh, whose helpers and jar cache this reuses.
#
#   bash ops/cluster-stack.sh up [--keep]    fresh stack (wipes everything first);
#                                            --keep: restart the existing one
#   bash ops/cluster-stack.sh down           stop everything (data kept)
#   bash ops/cluster-stack.sh status         one line per node; exit 0 only if all serve
#   bash ops/cluster-stack.sh env            export lines for the TIERSTREAM_* settings
#   bash ops/cluster-stack.sh kill-broker N          SIGKILL Kafka node N (1-3)
#   bash ops/cluster-stack.sh start-broker N         start it again, wait until it
#                                                    is back in every ISR
#   bash ops/cluster-stack.sh kill-redis-primary [PORT]   SIGKILL the primary of
#                          slot 0 (or PORT), wait until a replica took over
#   bash ops/cluster-stack.sh start-redis PORT       restart a node; it rejoins
#                                                    (as a replica after a failover)
#
# Ports: Kafka nodes 1, 2, 3 take clients (SASL_SSL) on 29092, 29192, 29292,
# their controller listener on the next port (29093...) and their replication
# listener (PLAINTEXT) on the one after (29094...); Redis 17000-17005 (cluster
# bus 27000-27005). TIERSTREAM_CLUSTER_STACK_KAFKA_PORT moves the Kafka block
# (node 1's client port; the others follow by +100), e.g. when another stack
# already listens on 29092.
# See ops/README.md ("Multi-node stack").
set -euo pipefail

PROG=ops/cluster-stack.sh
OPS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$OPS_DIR/.." && pwd)

# log, die, launch, live_pid, running, fetch_kafka_libs, take_lock...
# shellcheck source=ops/stack-lib.sh
source "$OPS_DIR/stack-lib.sh"

STACK_DIR=${TIERSTREAM_CLUSTER_STACK_DIR:-$REPO_DIR/.stack-cluster}
# Three JVMs starting at once on 2 cores take far longer than one.
KAFKA_START_TIMEOUT=${TIERSTREAM_CLUSTER_STACK_KAFKA_TIMEOUT:-180}
REDIS_START_TIMEOUT=30
# cluster-node-timeout is 2 s: a failover takes about 3-4 s, a rejoin less.
REDIS_FAILOVER_TIMEOUT=30
STOP_TIMEOUT=30
KAFKA_HEAP_OPTS=(-Xms256m -Xmx512m)

BROKERS=(1 2 3)
KAFKA_BASE_PORT=${TIERSTREAM_CLUSTER_STACK_KAFKA_PORT:-29092}
[[ $KAFKA_BASE_PORT =~ ^[0-9]+$ ]] && ((KAFKA_BASE_PORT >= 1024 && KAFKA_BASE_PORT <= 65000)) ||
  { echo "$PROG: invalid TIERSTREAM_CLUSTER_STACK_KAFKA_PORT '$KAFKA_BASE_PORT' (1024-65000)" >&2; exit 2; }
REDIS_PORTS=(17000 17001 17002 17003 17004 17005)
REDIS_NODE_TIMEOUT_MS=2000

mkdir -p "$STACK_DIR"
STACK_DIR=$(cd "$STACK_DIR" && pwd)
# Nothing in it belongs in git (data, logs, keys and passwords).
[[ -f $STACK_DIR/.gitignore ]] || echo '*' >"$STACK_DIR/.gitignore"

# The single-node stack's jar cache, shared: same POM, same jars.
KAFKA_LIBS=${TIERSTREAM_STACK_KAFKA_LIBS:-$REPO_DIR/.stack/kafka-libs}
KAFKA_POM=$OPS_DIR/kafka/pom.xml
KAFKA_LOG4J=$OPS_DIR/kafka/log4j2.properties
KAFKA_TEMPLATE=$OPS_DIR/kafka/cluster-server.properties.template
# The single node's Redis config (loopback, AOF everysec, noeviction); the
# cluster settings are added on the command line.
REDIS_CONF=$OPS_DIR/redis/redis.conf

SECRETS=$STACK_DIR/secrets
RUN_DIR=$STACK_DIR/run
LOG_DIR=$STACK_DIR/logs
KAFKA_LOGS=$LOG_DIR          # where fetch_kafka_libs writes mvn-fetch.log
KAFKA_DATA_ROOT=$STACK_DIR/kafka
REDIS_DATA_ROOT=$STACK_DIR/redis

# -------------------------------------------------------------- layout ---

client_port() { echo $((KAFKA_BASE_PORT + ($1 - 1) * 100)); }
controller_port() { echo $((KAFKA_BASE_PORT + 1 + ($1 - 1) * 100)); }
internal_port() { echo $((KAFKA_BASE_PORT + 2 + ($1 - 1) * 100)); }
bootstrap() {
  local n out=()
  for n in "${BROKERS[@]}"; do out+=("127.0.0.1:$(client_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

kafka_props() { echo "$RUN_DIR/kafka-$1.properties"; }
kafka_pidfile() { echo "$RUN_DIR/kafka-$1.pid"; }
kafka_logs() { echo "$LOG_DIR/kafka-$1"; }
kafka_data() { echo "$KAFKA_DATA_ROOT/$1"; }
kafka_node_pid() { live_pid "$(kafka_pidfile "$1")" "kafka.Kafka $(kafka_props "$1")"; }

redis_pidfile() { echo "$RUN_DIR/redis-$1.pid"; }
redis_node_pid() { live_pid "$(redis_pidfile "$1")" redis-server; }
rcli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }

check_broker_id() {
  [[ $1 =~ ^[123]$ ]] || die "no Kafka node '$1': the nodes are 1, 2 and 3"
}
check_redis_port() {
  [[ " ${REDIS_PORTS[*]} " == *" $1 "* ]] || die "no Redis node on port '$1': the nodes are ${REDIS_PORTS[*]}"
}

# Removes only what this script creates, never $STACK_DIR itself, so a
# mistaken TIERSTREAM_CLUSTER_STACK_DIR cannot wipe anything else.
wipe_state() {
  log "wiping $STACK_DIR (data, logs, secrets)"
  rm -rf "$KAFKA_DATA_ROOT" "$REDIS_DATA_ROOT" "$LOG_DIR" "$SECRETS"
  find "$RUN_DIR" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} + 2>/dev/null || true
}

# ------------------------------------------------------------- secrets ---

# 24 characters from [A-Za-z0-9]: nothing a properties file, a shell or the
# --add-scram syntax would have to escape.
new_password() {
  local pw=''
  while ((${#pw} < 24)); do pw+=$(head -c 48 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9'); done
  printf '%s' "${pw:0:24}"
}

# A throwaway PKI, made fresh at every `up`: a CA, one certificate per broker
# (SAN IP:127.0.0.1 and DNS:localhost, so hostname checks pass whichever name a
# client uses), a client certificate for mTLS tests, and a second CA that
# signed nothing here, for tests that must fail on an untrusted certificate.
# The extensions satisfy strict verifiers (Python 3.13's VERIFY_X509_STRICT):
# CA basicConstraints/keyUsage critical, key identifiers on both ends.
make_ca() {
  local name=$1 subject=$2
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "$subject" \
    -keyout "$SECRETS/$name-key.pem" -out "$SECRETS/$name.pem" \
    -addext 'basicConstraints=critical,CA:TRUE' \
    -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>>"$LOG_DIR/openssl.log" ||
    die "making the certificate $name failed (openssl output: $LOG_DIR/openssl.log)"
}

make_leaf() {
  local name=$1 subject=$2 usage=$3
  local ext=$SECRETS/$name.ext
  printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature,keyEncipherment' \
    "extendedKeyUsage=$usage" \
    'subjectAltName=IP:127.0.0.1,DNS:localhost' \
    'subjectKeyIdentifier=hash' 'authorityKeyIdentifier=keyid,issuer' >"$ext"
  { openssl req -newkey rsa:2048 -nodes -subj "$subject" \
      -keyout "$SECRETS/$name-key.pem" -out "$SECRETS/$name.csr" &&
    openssl x509 -req -in "$SECRETS/$name.csr" -days 30 -CA "$SECRETS/ca.pem" \
      -CAkey "$SECRETS/ca-key.pem" -CAcreateserial -extfile "$ext" \
      -out "$SECRETS/$name.pem"; } 2>>"$LOG_DIR/openssl.log" ||
    die "making the certificate $name failed (openssl output: $LOG_DIR/openssl.log)"
  rm -f "$SECRETS/$name.csr" "$ext"
}

# Secrets are made under umask 077 (files 600); only the two CA certificates,
# which are public, are made readable afterwards.
make_secrets() {
  command -v openssl >/dev/null 2>&1 || die "openssl not found: apt-get install openssl"
  log "making certificates and passwords in $SECRETS"
  local old_umask n
  old_umask=$(umask)
  umask 077
  mkdir -p "$SECRETS" "$LOG_DIR"
  new_password >"$SECRETS/kafka-admin-password"
  new_password >"$SECRETS/kafka-password"
  make_ca ca '/CN=tierstream local cluster CA'
  make_ca untrusted-ca '/CN=tierstream untrusted CA (signs nothing)'
  for n in "${BROKERS[@]}"; do
    make_leaf "kafka-$n" "/CN=kafka-$n" serverAuth,clientAuth
    # Kafka's PEM keystore: a PKCS#8 key (openssl 3 writes that) followed by
    # the certificate chain. The key is unencrypted, so no ssl.key.password.
    cat "$SECRETS/kafka-$n-key.pem" "$SECRETS/kafka-$n.pem" "$SECRETS/ca.pem" \
      >"$SECRETS/kafka-$n.keystore.pem"
    rm -f "$SECRETS/kafka-$n-key.pem"
  done
  make_leaf client /CN=tierstream clientAuth
  rm -f "$SECRETS/ca.srl"
  write_admin_client_config
  umask "$old_umask"
  chmod 644 "$SECRETS/ca.pem" "$SECRETS/untrusted-ca.pem"
  chmod 711 "$SECRETS"
}

# For operators: Kafka's Java tools (from a Kafka distribution) take this with
# --command-config. Not for kcat: Debian's librdkafka 2.0.2 fails SCRAM against
# Kafka 4 ("invalid credentials" with the right password; fixed in 2.6.1).
write_admin_client_config() {
  local pw
  pw=$(<"$SECRETS/kafka-admin-password")
  printf '%s\n' 'security.protocol=SASL_SSL' 'sasl.mechanism=SCRAM-SHA-512' \
    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$pw\";" \
    'ssl.truststore.type=PEM' "ssl.truststore.location=$SECRETS/ca.pem" \
    >"$SECRETS/admin-client.properties"
}

# --------------------------------------------------------------- kafka ---

render_kafka_props() {
  local n=$1 text voters='' v
  for v in "${BROKERS[@]}"; do voters+="${voters:+,}$v@127.0.0.1:$(controller_port "$v")"; done
  text=$(<"$KAFKA_TEMPLATE")
  # Quoted replacements: bash 5.2 otherwise treats '&' in them as the match.
  text=${text//@NODE_ID@/"$n"}
  text=${text//@CLIENT_PORT@/"$(client_port "$n")"}
  text=${text//@INTERNAL_PORT@/"$(internal_port "$n")"}
  text=${text//@CONTROLLER_PORT@/"$(controller_port "$n")"}
  text=${text//@VOTERS@/"$voters"}
  text=${text//@DATA_DIR@/"$(kafka_data "$n")"}
  text=${text//@SECRETS_DIR@/"$SECRETS"}
  printf '%s\n' "$text" >"$(kafka_props "$n")"
}

# Formats the three log dirs in parallel (a JVM start each). The SCRAM
# credentials go into the bootstrap metadata, so they exist from the first
# moment the cluster serves; both mechanisms for both users.
format_kafka() {
  local cluster_id admin_pw svc_pw n pids=() scram=() mech
  cluster_id=$(new_cluster_id)
  admin_pw=$(<"$SECRETS/kafka-admin-password")
  svc_pw=$(<"$SECRETS/kafka-password")
  for mech in SCRAM-SHA-512 SCRAM-SHA-256; do
    scram+=(--add-scram "$mech=[name=admin,password=$admin_pw]")
    scram+=(--add-scram "$mech=[name=tierstream,password=$svc_pw]")
  done
  log "formatting 3 Kafka log dirs (cluster id $cluster_id, SCRAM users admin and tierstream)"
  for n in "${BROKERS[@]}"; do
    mkdir -p "$(kafka_data "$n")" "$(kafka_logs "$n")"
    render_kafka_props "$n"
    kafka_java_cmd "$(kafka_logs "$n")"
    "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$(kafka_props "$n")" \
      "${scram[@]}" >"$(kafka_logs "$n")/format.log" 2>&1 9>&- &
    pids+=($!)
  done
  for n in "${BROKERS[@]}"; do
    if ! wait "${pids[n - 1]}"; then
      show_tail "$(kafka_logs "$n")/format.log"
      die "formatting Kafka node $n failed (log: $(kafka_logs "$n")/format.log)"
    fi
  done
}

# Starts node N on its existing log dir; the offset of its server.log at this
# moment goes to run/, so that only this start's "Kafka Server started" counts.
start_broker_process() {
  local n=$1 pid p
  if pid=$(kafka_node_pid "$n"); then
    log "kafka node $n already running (pid $pid)"
    return 0
  fi
  [[ -f $(kafka_data "$n")/meta.properties ]] ||
    die "kafka node $n has no formatted log dir ($(kafka_data "$n")): run '$PROG up' first"
  for p in "$(client_port "$n")" "$(controller_port "$n")" "$(internal_port "$n")"; do
    port_in_use "$p" && die "port $p on 127.0.0.1 is taken by a process this script did not start: stop it first"
  done
  local logs
  logs=$(kafka_logs "$n")
  mkdir -p "$logs"
  stat -c %s "$logs/server.log" 2>/dev/null >"$RUN_DIR/kafka-$n.logoffset" || echo 0 >"$RUN_DIR/kafka-$n.logoffset"
  render_kafka_props "$n"
  kafka_java_cmd "$logs"
  launch "$(kafka_pidfile "$n")" "$logs/kafka.out" "${KAFKA_JAVA[@]}" kafka.Kafka "$(kafka_props "$n")"
  log "kafka node $n starting (pid $(<"$(kafka_pidfile "$n")"), client port $(client_port "$n"))"
}

broker_started_logged() {
  local n=$1 log_file offset size
  log_file=$(kafka_logs "$n")/server.log
  [[ -f $log_file ]] || return 1
  offset=$(cat "$RUN_DIR/kafka-$n.logoffset" 2>/dev/null || echo 0)
  size=$(stat -c %s "$log_file")
  ((size >= offset)) || offset=0   # rolled over meanwhile
  # Not `tail | grep -q`: grep quits at the first match, and under pipefail the
  # SIGPIPE that tail then gets on a long log would count as "not found".
  grep -q 'Kafka Server started' < <(tail -c "+$((offset + 1))" "$log_file")
}

# Metadata from node N over its PLAINTEXT replication listener (kcat cannot do
# SCRAM against Kafka 4, see write_admin_client_config): the brokers the
# controller has registered and unfenced, and every partition's ISR.
kafka_metadata() {
  kcat -b "127.0.0.1:$(internal_port "$1")" -L -m 5 2>/dev/null
}

# The client listener serves TLS with a certificate the stack's CA signed for
# 127.0.0.1. (SCRAM itself is proven by ops/cluster_smoke.py.)
kafka_tls_ok() {
  openssl s_client -connect "127.0.0.1:$(client_port "$1")" -CAfile "$SECRETS/ca.pem" \
    -verify_return_error -verify_ip 127.0.0.1 </dev/null >/dev/null 2>&1
}

# Ready: logged its start, serves TLS on its client port, and its metadata
# lists the brokers given (all three during `up`, itself after a restart).
kafka_wait_ready() {
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT)) n want md pending
  while :; do
    pending=()
    for n in "$@"; do
      kafka_node_pid "$n" >/dev/null || {
        show_tail "$(kafka_logs "$n")/server.log" "$(kafka_logs "$n")/kafka.out"
        die "kafka node $n exited during start-up (logs: $(kafka_logs "$n"))"
      }
      if ! broker_started_logged "$n" || ! md=$(kafka_metadata "$n"); then
        pending+=("$n"); continue
      fi
      for want in "$@"; do
        grep -q "broker $want at 127.0.0.1:$(internal_port "$want")" <<<"$md" || { pending+=("$n"); break; }
      done
    done
    if ((${#pending[@]} == 0)); then
      for n in "$@"; do
        kafka_tls_ok "$n" || die "kafka node $n runs but its TLS listener 127.0.0.1:$(client_port "$n") fails verification against $SECRETS/ca.pem"
      done
      log "kafka ready: node(s) $* registered, TLS verified on their client ports"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      for n in "${pending[@]}"; do show_tail "$(kafka_logs "$n")/server.log"; done
      die "kafka node(s) ${pending[*]} not ready after ${KAFKA_START_TIMEOUT}s (logs: $LOG_DIR; '$PROG down' stops everything)"
    fi
    sleep 1
  done
}

# Partitions whose ISR is smaller than their replica set, from kcat's
# "partition P, leader L, replicas: a,b,c, isrs: a,b" lines.
under_replicated() {
  kafka_metadata "$1" | awk '
    /^  topic "/ { topic = $2 }
    /partition [0-9]+, leader/ {
      r = $0; sub(/.*replicas: /, "", r); sub(/,? *isrs:.*/, "", r)
      i = $0; sub(/.*isrs: /, "", i)
      if (split(r, a, ",") != split(i, b, ",")) { print topic, $2; n++ }
    }
    END { exit n > 0 ? 0 : 1 }'
}

wait_fully_replicated() {
  local n=$1 deadline=$((SECONDS + KAFKA_START_TIMEOUT)) urp
  while urp=$(under_replicated "$n"); do
    if ((SECONDS >= deadline)); then
      die "kafka node $n is up but not back in every ISR after ${KAFKA_START_TIMEOUT}s; under-replicated: $(tr '\n' ' ' <<<"$urp")"
    fi
    sleep 1
  done
  log "kafka node $n is back in every ISR"
}

# All three at once: each node's controlled shutdown asks the controller
# quorum, and stopping them one by one would leave the last one without one.
stop_brokers() {
  stop_nodes "kafka node" kafka_node_pid "${BROKERS[@]}"
  rm -f "$RUN_DIR"/kafka-?.pid
}

# --------------------------------------------------------------- redis ---

start_redis_process() {
  local port=$1 pid dir
  if pid=$(redis_node_pid "$port"); then
    log "redis $port already running (pid $pid)"
    return 0
  fi
  port_in_use "$port" && die "port $port on 127.0.0.1 is taken by a process this script did not start: stop it first"
  port_in_use $((port + 10000)) && die "port $((port + 10000)) (cluster bus of $port) on 127.0.0.1 is taken: stop what listens there"
  dir=$REDIS_DATA_ROOT/$port
  mkdir -p "$dir" "$LOG_DIR"
  launch "$(redis_pidfile "$port")" "$LOG_DIR/redis-$port.out" redis-server "$REDIS_CONF" \
    --port "$port" --bind 127.0.0.1 --dir "$dir" --logfile "$LOG_DIR/redis-$port.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS" \
    --appendonly yes --appendfsync everysec
}

redis_wait_pong() {
  local deadline=$((SECONDS + REDIS_START_TIMEOUT)) port
  for port in "$@"; do
    while [[ $(rcli "$port" ping 2>/dev/null) != PONG ]]; do
      redis_node_pid "$port" >/dev/null || {
        show_tail "$LOG_DIR/redis-$port.log" "$LOG_DIR/redis-$port.out"
        die "redis $port exited during start-up (log: $LOG_DIR/redis-$port.log)"
      }
      ((SECONDS < deadline)) || die "redis $port does not answer PING after ${REDIS_START_TIMEOUT}s (log: $LOG_DIR/redis-$port.log)"
      sleep 0.2
    done
  done
}

cluster_state_ok() { [[ $(rcli "$1" cluster info 2>/dev/null) == *cluster_state:ok* ]]; }

# Every node answers, says cluster_state:ok, and redis-cli's own check finds
# all 16384 slots covered and every node agreeing on the slot map.
redis_wait_cluster_ok() {
  local deadline=$((SECONDS + REDIS_FAILOVER_TIMEOUT)) port ok
  while :; do
    ok=1
    for port in "${REDIS_PORTS[@]}"; do cluster_state_ok "$port" || { ok=0; break; }; done
    if ((ok)) && redis-cli --cluster check "127.0.0.1:${REDIS_PORTS[0]}" >"$LOG_DIR/redis-cluster-check.log" 2>&1; then
      log "redis cluster ok: 3 primaries, 3 replicas on ${REDIS_PORTS[*]}"
      return 0
    fi
    ((SECONDS < deadline)) || die "redis cluster not ok after ${REDIS_FAILOVER_TIMEOUT}s (node $port; see $LOG_DIR/redis-cluster-check.log)"
    sleep 0.5
  done
}

create_redis_cluster() {
  local nodes=() port
  for port in "${REDIS_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
  log "creating the redis cluster (3 primaries, 1 replica each)"
  if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      >"$LOG_DIR/redis-cluster-create.log" 2>&1; then
    show_tail "$LOG_DIR/redis-cluster-create.log"
    die "redis-cli --cluster create failed (log: $LOG_DIR/redis-cluster-create.log)"
  fi
}

# `cluster nodes` as seen by any live node: "id ip:port@bus flags master ...".
cluster_nodes() {
  local port
  for port in "${REDIS_PORTS[@]}"; do
    redis_node_pid "$port" >/dev/null || continue
    rcli "$port" cluster nodes 2>/dev/null && return 0
  done
  return 1
}

# The port of the healthy primary serving slot $1, from `cluster nodes`.
slot_owner() {
  local slot=$1
  cluster_nodes | awk -v s="$slot" '
    $3 ~ /master/ && $3 !~ /fail/ {
      for (i = 9; i <= NF; i++) {
        split($i, r, "-"); if (r[2] == "") r[2] = r[1]
        if ($i !~ /^\[/ && s + 0 >= r[1] + 0 && s + 0 <= r[2] + 0) { split($2, a, "[:@]"); print a[2]; exit }
      }
    }'
}

# The first slot a primary serves (empty when $1 is a replica or has no slots).
first_slot_of() {
  cluster_nodes | awk -v p="$1" '
    { split($2, a, "[:@]") }
    a[2] == p && $3 ~ /master/ && NF >= 9 { split($9, r, "-"); print r[1]; exit }'
}

# SIGTERM is SHUTDOWN: each node fsyncs its AOF before it exits.
stop_redis_nodes() {
  stop_nodes redis redis_node_pid "${REDIS_PORTS[@]}"
  rm -f "$RUN_DIR"/redis-*.pid
}

# SIGTERM to every running node of one kind, then waits for each (SIGKILL
# after $STOP_TIMEOUT s). $1: what they are, $2: the function that prints a
# node's pid (fails when it is not running), then the nodes.
stop_nodes() {
  local name=$1 pid_of=$2 node pid stopping=()
  shift 2
  for node in "$@"; do
    if pid=$("$pid_of" "$node"); then
      log "stopping $name $node (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      stopping+=("$node:$pid")
    fi
  done
  ((${#stopping[@]})) || log "$name: none running"
  local entry
  for entry in ${stopping[@]+"${stopping[@]}"}; do
    wait_exit_or_kill "$name ${entry%%:*}" "${entry#*:}"
  done
}

# ------------------------------------------------------------ commands ---

check_ports_free() {
  local n p
  for n in "${BROKERS[@]}"; do
    for p in "$(client_port "$n")" "$(controller_port "$n")" "$(internal_port "$n")"; do
      port_in_use "$p" && die "port $p on 127.0.0.1 is taken by a process this script did not start: stop it first"
    done
  done
  for p in "${REDIS_PORTS[@]}"; do
    port_in_use "$p" && die "port $p on 127.0.0.1 is taken by a process this script did not start: stop it first"
    port_in_use $((p + 10000)) && die "port $((p + 10000)) on 127.0.0.1 (a Redis cluster bus port) is taken: stop what listens there"
  done
  return 0
}

cmd_up() {
  local keep=$1 start=$SECONDS n port
  check_java
  ensure_apt_packages
  fetch_kafka_libs
  if ((keep)) && [[ -s $SECRETS/kafka-password && -f $(kafka_data 1)/meta.properties && -s $REDIS_DATA_ROOT/${REDIS_PORTS[0]}/nodes.conf ]]; then
    log "restarting the existing stack in $STACK_DIR"
    for n in "${BROKERS[@]}"; do start_broker_process "$n"; done
    for port in "${REDIS_PORTS[@]}"; do start_redis_process "$port"; done
    redis_wait_pong "${REDIS_PORTS[@]}"
  else
    ((keep)) && log "no complete stack in $STACK_DIR to keep: making a fresh one"
    cmd_down
    wipe_state
    check_ports_free
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    make_secrets
    format_kafka
    # Kafka first: the JVMs are the slow part, Redis starts while they warm up.
    for n in "${BROKERS[@]}"; do start_broker_process "$n"; done
    for port in "${REDIS_PORTS[@]}"; do start_redis_process "$port"; done
    redis_wait_pong "${REDIS_PORTS[@]}"
    create_redis_cluster
  fi
  redis_wait_cluster_ok
  kafka_wait_ready "${BROKERS[@]}"
  log "cluster stack up in $((SECONDS - start))s; client settings: eval \"\$(bash $PROG env)\""
}

cmd_down() {
  stop_brokers
  stop_redis_nodes
}

cmd_status() {
  local n pid port ok=0 role
  for n in "${BROKERS[@]}"; do
    if pid=$(kafka_node_pid "$n"); then
      if port_in_use "$(client_port "$n")"; then
        echo "kafka $n: running (pid $pid, SASL_SSL 127.0.0.1:$(client_port "$n"))"
      else
        echo "kafka $n: running but not listening yet (pid $pid, port $(client_port "$n"))"; ok=1
      fi
    else
      echo "kafka $n: stopped (port $(client_port "$n"))"; ok=1
    fi
  done
  for port in "${REDIS_PORTS[@]}"; do
    if pid=$(redis_node_pid "$port"); then
      role=$(rcli "$port" role 2>/dev/null | head -n 1 || true)
      [[ $role == slave ]] && role=replica
      [[ $role == master ]] && role=primary
      echo "redis $port: running (pid $pid, ${role:-not answering}$(cluster_state_ok "$port" || echo ', cluster_state not ok'))"
      [[ -n $role ]] && cluster_state_ok "$port" || ok=1
    else
      echo "redis $port: stopped"; ok=1
    fi
  done
  return "$ok"
}

# Plain values where they need no quoting (printf %q would write "\," for every
# comma, which only a shell undoes, not an env-file reader); a path with
# spaces or quotes gets single quotes.
env_line() {
  local value=$2
  if ! [[ $value =~ ^[A-Za-z0-9_./:,@+=-]*$ ]]; then
    value="'${value//\'/\'\\\'\'}'"
  fi
  printf 'export %s=%s\n' "$1" "$value"
}

cmd_env() {
  [[ -s $SECRETS/kafka-password && -s $SECRETS/ca.pem ]] ||
    die "no secrets in $SECRETS: run '$PROG up' first"
  local urls=() port
  for port in "${REDIS_PORTS[@]}"; do urls+=("127.0.0.1:$port"); done
  env_line TIERSTREAM_KAFKA_BOOTSTRAP "$(bootstrap)"
  env_line TIERSTREAM_KAFKA_SECURITY_PROTOCOL SASL_SSL
  env_line TIERSTREAM_KAFKA_SASL_MECHANISM SCRAM-SHA-512
  env_line TIERSTREAM_KAFKA_SASL_USERNAME tierstream
  env_line TIERSTREAM_KAFKA_SASL_PASSWORD_FILE "$SECRETS/kafka-password"
  env_line TIERSTREAM_KAFKA_SSL_CAFILE "$SECRETS/ca.pem"
  env_line TIERSTREAM_REDIS_URL "redis+cluster://$(IFS=,; echo "${urls[*]}")/0"
}

cmd_kill_broker() {
  local n=$1 pid i
  check_broker_id "$n"
  if ! pid=$(kafka_node_pid "$n"); then
    log "kafka node $n not running"
    return 0
  fi
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do running "$pid" || break; sleep 0.1; done
  running "$pid" && die "kafka node $n (pid $pid) did not die after SIGKILL"
  rm -f "$(kafka_pidfile "$n")"
  log "killed kafka node $n (pid $pid) with SIGKILL; the controller fences it after broker.session.timeout.ms (6 s)"
}

cmd_start_broker() {
  local n=$1
  check_broker_id "$n"
  check_java
  [[ -s $SECRETS/ca.pem ]] || die "no stack in $STACK_DIR: run '$PROG up' first"
  start_broker_process "$n"
  kafka_wait_ready "$n"
  wait_fully_replicated "$n"
}

# Prints "old_primary=P new_primary=Q failover_seconds=S" on stdout once a
# replica serves the killed primary's slots and every live node says ok.
cmd_kill_redis_primary() {
  local port=${1:-} slot pid new t0 i
  if [[ -z $port ]]; then
    slot=0
    port=$(slot_owner 0) || true
    [[ -n $port ]] || die "no healthy primary serves slot 0: is the redis cluster up? ('$PROG status')"
  else
    check_redis_port "$port"
    slot=$(first_slot_of "$port") || true
    [[ -n $slot ]] || die "redis $port is not a primary that serves slots (a replica, or down): '$PROG status' shows the roles"
  fi
  pid=$(redis_node_pid "$port") || die "redis $port is not running"
  t0=$(date +%s.%N)
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do running "$pid" || break; sleep 0.05; done
  rm -f "$(redis_pidfile "$port")"
  log "killed redis primary $port (pid $pid, serves slot $slot); waiting for a replica to take over"
  local deadline=$((SECONDS + REDIS_FAILOVER_TIMEOUT)) p ok
  while :; do
    new=$(slot_owner "$slot") || true
    if [[ -n $new && $new != "$port" ]]; then
      ok=1
      for p in "${REDIS_PORTS[@]}"; do
        [[ $p == "$port" ]] && continue
        redis_node_pid "$p" >/dev/null || continue
        cluster_state_ok "$p" || { ok=0; break; }
      done
      ((ok)) && break
    fi
    ((SECONDS < deadline)) || die "no replica took over slot $slot from redis $port after ${REDIS_FAILOVER_TIMEOUT}s (logs: $LOG_DIR/redis-*.log)"
    sleep 0.1
  done
  local took
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  log "redis $new promoted to primary of slot $slot in ${took}s; restart the old one with '$PROG start-redis $port'"
  echo "old_primary=$port new_primary=$new failover_seconds=$took"
}

# Restarts a stopped node from its nodes.conf: it finds the cluster again and,
# if its slots moved to its replica meanwhile, becomes that one's replica.
cmd_start_redis() {
  local port=$1 deadline role
  check_redis_port "$port"
  [[ -s $REDIS_DATA_ROOT/$port/nodes.conf ]] || die "redis $port was never part of a cluster here: run '$PROG up' first"
  start_redis_process "$port"
  redis_wait_pong "$port"
  deadline=$((SECONDS + REDIS_FAILOVER_TIMEOUT))
  while :; do
    role=$(rcli "$port" role 2>/dev/null | head -n 1 || true)
    if cluster_state_ok "$port"; then
      if [[ $role == master ]]; then
        log "redis $port is back as a primary (no failover had happened)"
        return 0
      fi
      if [[ $role == slave && $(rcli "$port" info replication) == *master_link_status:up* ]]; then
        log "redis $port is back as a replica of $(rcli "$port" info replication | sed -n 's/^master_port:\([0-9]*\).*/\1/p')"
        return 0
      fi
    fi
    ((SECONDS < deadline)) || die "redis $port started but did not rejoin the cluster within ${REDIS_FAILOVER_TIMEOUT}s (log: $LOG_DIR/redis-$port.log)"
    sleep 0.2
  done
}

usage() {
  cat >&2 <<EOF
usage: bash $PROG up [--keep] | down | status | env
       bash $PROG kill-broker N | start-broker N              (N: 1, 2, 3)
       bash $PROG kill-redis-primary [PORT] | start-redis PORT (PORT: ${REDIS_PORTS[0]}-${REDIS_PORTS[5]})
EOF
  exit 2
}

(($# >= 1)) || usage
cmd=$1; shift
case $cmd in
  up)
    (($# == 0)) || [[ $# == 1 && $1 == --keep ]] || usage
    take_lock
    cmd_up "$(( $# == 1 ))" ;;
  down) (($# == 0)) || usage; take_lock; cmd_down ;;
  status) (($# == 0)) || usage; cmd_status ;;
  env) (($# == 0)) || usage; cmd_env ;;
  kill-broker) (($# == 1)) || usage; take_lock; cmd_kill_broker "$1" ;;
  start-broker) (($# == 1)) || usage; take_lock; cmd_start_broker "$1" ;;
  kill-redis-primary) (($# <= 1)) || usage; take_lock; cmd_kill_redis_primary "${1:-}" ;;
  start-redis) (($# == 1)) || usage; take_lock; cmd_start_redis "$1" ;;
  *) usage ;;
esac
