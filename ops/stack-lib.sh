# Helpers shared by ops/stack.sh (one broker, one Redis) and ops/cluster-stack.sh
# (three brokers, a Redis Cluster): process handling, prerequisites, the Kafka
# jar cache. Sourced, never run. The caller sets, before calling them:
#   PROG                     the name in messages (log, die)
#   STOP_TIMEOUT             seconds wait_exit_or_kill waits before SIGKILL
#   KAFKA_LIBS, KAFKA_POM    the jar cache and the POM it is fetched from
#   KAFKA_LOGS               where the jar fetch logs (and kafka_java_cmd's default)
#   KAFKA_HEAP_OPTS, KAFKA_LOG4J   heap flags and log4j2 config of kafka_java_cmd
#   RUN_DIR, STACK_DIR       where take_lock keeps its lock
# shellcheck shell=bash

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "$*"; exit 1; }

# ------------------------------------------------------------- processes ---

port_in_use() {
  # bash's /dev/tcp needs no ss/netstat, which a minimal image may lack.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the pid recorded in $1 if that process is alive and its command line
# contains $2. The command-line check keeps a recycled pid (after a reboot or
# a crash) from being mistaken for our server, and from being killed by `down`.
live_pid() {
  local pidfile=$1 pattern=$2 pid
  [[ -r $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
  printf '%s\n' "$pid"
}

# Detached from this shell (own session, SIGHUP ignored, no stdin) so the
# server outlives the terminal or make process that ran `up`. The inner shell
# writes its own pid and then execs the server, so the pid file holds the
# server's real pid whether or not setsid had to fork.
launch() {
  local pidfile=$1 out=$2; shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
  # 9>&-: the server must not inherit take_lock's descriptor, or it would
  # hold the lock for its whole life and block every later call.
  setsid nohup bash -c 'echo "$$" >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$out" 2>&1 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $pidfile ]] && return 0; sleep 0.1; done
  die "could not start $1 (no pid file $pidfile); see $out"
}

# A zombie counts as gone: once `up` has exited the servers are reparented to
# PID 1, and some init processes (this project's VMs among them) reap only
# every couple of seconds, which kill -0 alone would wait out.
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# Waits for a pid to exit; SIGKILL after $STOP_TIMEOUT seconds.
wait_exit_or_kill() {
  local name=$1 pid=$2 i
  for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
    running "$pid" || return 0
    sleep 0.2
  done
  log "$name (pid $pid) still running after ${STOP_TIMEOUT}s: sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do running "$pid" || return 0; sleep 0.1; done
  die "$name (pid $pid) did not die after SIGKILL"
}

show_tail() {
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    log "last 30 lines of $f:"
    tail -n 30 "$f" >&2
  done
}

# --------------------------------------------------------- prerequisites ---

check_java() {
  command -v java >/dev/null 2>&1 ||
    die "java not found: install a JDK 17 (apt-get install openjdk-17-jre-headless)"
  local spec
  spec=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')
  if ! [[ ${spec%%.*} =~ ^[0-9]+$ ]] || ((${spec%%.*} < 17)); then
    die "java ${spec:-unknown} found, Kafka 4 needs 17 or newer: install a JDK 17 (apt-get install openjdk-17-jre-headless)"
  fi
}

check_mvn() {
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven 3 (apt-get install maven)"
}

# redis-cli ships in redis-tools, which redis-server depends on.
ensure_apt_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  # Not servers of the stack, but the test suite needs them and CI starts from a machine
  # without them: promtool checks the ops files (check config/rules, test rules), and
  # tests/integration/test_prometheus.py runs a real prometheus against the service.
  # Debian's prometheus package ships both binaries.
  if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    missing+=(prometheus)
  fi
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  # The multi-node stack makes its TLS certificates with openssl (ops/cluster-stack.sh).
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  ((${#missing[@]})) || return 0

  local sudo=()
  if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    else
      die "${missing[*]} not found: install as root with 'apt-get install ${missing[*]}'"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "${missing[*]} not found and no apt-get: install them with your package manager"

  log "installing ${missing[*]} with apt-get"
  # A fresh CI machine has no package lists yet, so the install alone would 404.
  "${sudo[@]}" apt-get update -q >&2 9>&-
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 9>&-

  local tool
  for tool in redis-server redis-cli kcat promtool prometheus docker-compose openssl; do
    command -v "$tool" >/dev/null 2>&1 || die "apt-get installed ${missing[*]} but $tool is still not on PATH ($PATH)"
  done

  # On a machine booted with systemd the package starts its own redis on 6379,
  # which would collide with ours. Only undone when we just installed it, so
  # an administrator's own redis is never touched.
  # Likewise the prometheus package starts a system Prometheus on 9090 (the port
  # docker-compose.yml publishes its own on); the tests start theirs on a free port.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    local pkg
    for pkg in redis-server prometheus; do
      if [[ " ${missing[*]} " == *" $pkg "* ]]; then
        "${sudo[@]}" systemctl disable --now "$pkg" >&2 9>&- || true
      fi
    done
  fi
}

# The marker holds the POM's checksum: editing the POM (say, a Kafka version
# bump) refetches, anything else reuses the cache. The jars land in a temp
# folder first so an interrupted fetch never looks complete.
fetch_kafka_libs() {
  local marker=$KAFKA_LIBS/.complete want
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -r $marker && $(<"$marker") == "$want" ]]; then
    return 0
  fi
  check_mvn
  log "fetching Kafka jars from Maven Central into $KAFKA_LIBS"
  mkdir -p "$(dirname "$KAFKA_LIBS")" "$KAFKA_LOGS"
  local tmp=$KAFKA_LIBS.tmp.$$
  # shellcheck disable=SC2064  # expand now: $tmp is local and gone at exit
  trap "rm -rf $(printf %q "$tmp")" EXIT
  rm -rf "$tmp"
  # The plugin version is pinned: Maven 3.8's default maven-dependency-plugin
  # is old, and unpinned plugins drift between machines.
  if ! mvn -B -q -f "$KAFKA_POM" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_LOGS/mvn-fetch.log" 2>&1; then
    show_tail "$KAFKA_LOGS/mvn-fetch.log"
    die "fetching the Kafka jars failed (full output: $KAFKA_LOGS/mvn-fetch.log)"
  fi
  if ! compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || ! compgen -G "$tmp/log4j-slf4j*-impl-*.jar" >/dev/null; then
    die "Maven finished but the broker or log4j binding jar is missing in $tmp"
  fi
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  trap - EXIT
  printf '%s\n' "$want" >"$KAFKA_LIBS/.complete"
}

# Sets the array KAFKA_JAVA rather than printing a command: launch() hands it
# to a fresh bash that execs it, so the pid file ends up holding the JVM's own
# pid. $1: the folder for the broker's logs (default $KAFKA_LOGS).
# shellcheck disable=SC2120  # $1 is optional
# A new Kafka cluster id: 16 random bytes in URL-safe base64 without padding (making it
# here saves a JVM start, StorageTool random-uuid). Never one that starts with "-": the
# storage tool would take it for an option and refuse to format (1 start in 64 did),
# which is why Kafka's own Uuid.randomUuid() draws again too.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* ]] || break
  done
  printf '%s\n' "$id"
}

kafka_java_cmd() {
  local logs=${1:-$KAFKA_LOGS}
  # shellcheck disable=SC2034  # read by the caller
  KAFKA_JAVA=(java "${KAFKA_HEAP_OPTS[@]}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError \
    -XX:ErrorFile="$logs/hs_err_pid%p.log" \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$logs" \
    -cp "$KAFKA_LIBS/*")
}

# Serialises concurrent calls (two test runners calling `up` at once would
# otherwise both see "not running" and race for the ports).
take_lock() {
  mkdir -p "$RUN_DIR"
  command -v flock >/dev/null 2>&1 || return 0
  { exec 9>"$RUN_DIR/.lock"; } 2>/dev/null || die "cannot write $RUN_DIR: is $STACK_DIR owned by another user?"
  flock -w 180 9 || die "another $PROG is still running on $STACK_DIR (lock $RUN_DIR/.lock)"
}
