#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback, beside the machine's own node (which it never touches).
#
#   ops/rabbitmq-cluster/cluster.sh start|stop|status|urls|stop-node N|start-node N|kill-node N
#
# Environment (all optional):
#   CLUSTER_DIR   data, logs, pid files and the cluster's own Erlang cookie   (var/rabbitmq-cluster)
#   CLUSTER_NAME  node name prefix: nodes are <name>1@localhost .. <name>3@localhost   (crv)
#   CLUSTER_PORT  AMQP port of node 1; nodes 2 and 3 take the next two                 (5681)
#                 distribution ports are CLUSTER_PORT+20000 .. +2 (25681-25683 by default)
#
# The node binaries are called directly: the /usr/sbin wrappers switch to the rabbitmq user and
# its cookie. epmd is shared with the machine's node, so it is never stopped here, and every
# rabbitmqctl call names its node (-n), or it would reach rabbit@localhost.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${CLUSTER_DIR:-$ROOT/var/rabbitmq-cluster}"
NAME="${CLUSTER_NAME:-crv}"
PORT="${CLUSTER_PORT:-5681}"
BIN="${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}"
NODES=(1 2 3)
LOOPBACK_DIST="-kernel inet_dist_use_interface {127,0,0,1}"

node() { echo "${NAME}$1@localhost"; }
amqp_port() { echo $((PORT + $1 - 1)); }

prepare() {
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  if [[ ! -f "$DIR/.erlang.cookie" ]]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/.erlang.cookie")
    chmod 0400 "$DIR/.erlang.cookie"
  fi
  : > "$DIR/empty.env"
  for n in "${NODES[@]}"; do
    mkdir -p "$DIR/n$n/mnesia" "$DIR/n$n/log"
    printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users.guest = true\n' "$(amqp_port "$n")" \
      > "$DIR/n$n/rabbitmq.conf"
    echo '[].' > "$DIR/n$n/enabled_plugins"
  done
}

# Run a command with node N's environment (its own HOME holds the cluster's cookie).
with_node() {
  local n=$1; shift
  env HOME="$DIR" \
    RABBITMQ_NODENAME="$(node "$n")" \
    RABBITMQ_DIST_PORT=$((PORT + 20000 + n - 1)) \
    RABBITMQ_MNESIA_BASE="$DIR/n$n/mnesia" \
    RABBITMQ_LOG_BASE="$DIR/n$n/log" \
    RABBITMQ_CONFIG_FILE="$DIR/n$n/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/n$n/enabled_plugins" \
    RABBITMQ_PID_FILE="$DIR/n$n/pid" \
    RABBITMQ_CONF_ENV_FILE="$DIR/empty.env" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$LOOPBACK_DIST" \
    RABBITMQ_CTL_ERL_ARGS="$LOOPBACK_DIST" \
    "$@"
}

ctl() { local n=$1; shift; with_node "$n" "$BIN/rabbitmqctl" -q -n "$(node "$n")" "$@"; }

running() { [[ -f "$DIR/n$1/pid" ]] && kill -0 "$(cat "$DIR/n$1/pid")" 2>/dev/null; }

launch_node() {
  local n=$1
  if running "$n"; then return 0; fi
  rm -f "$DIR/n$n/pid"
  with_node "$n" setsid "$BIN/rabbitmq-server" >> "$DIR/n$n/log/console.log" 2>&1 < /dev/null &
}

await_node() { ctl "$1" wait --timeout 120 "$DIR/n$1/pid"; }

start_node() { launch_node "$1"; await_node "$1"; }

stop_node() {
  local n=$1
  running "$n" || return 0
  ctl "$n" stop "$DIR/n$n/pid"
}

kill_node() {
  local n=$1
  running "$n" || return 0
  local pid; pid="$(cat "$DIR/n$n/pid")"
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

urls() {
  local out=()
  for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2F"); done
  (IFS=,; echo "${out[*]}")
}

cmd="${1:-}"
prepare
case "$cmd" in
  start)
    first_start=0; [[ -d "$DIR/n1/mnesia/$(node 1)" ]] || first_start=1
    # All three boot at once: a node restarted after a full stop waits for its peers anyway.
    for n in "${NODES[@]}"; do launch_node "$n"; done
    for n in "${NODES[@]}"; do await_node "$n"; done
    if (( first_start )); then
      for n in 2 3; do
        ctl "$n" stop_app
        ctl "$n" join_cluster "$(node 1)"
        ctl "$n" start_app
      done
    fi
    ctl 1 await_online_nodes 3 --timeout 120
    urls
    ;;
  stop)
    for n in 3 2 1; do stop_node "$n"; done
    ;;
  status)
    for n in "${NODES[@]}"; do
      if running "$n"; then echo "$(node "$n") up on 127.0.0.1:$(amqp_port "$n")"
      else echo "$(node "$n") down"; fi
    done
    ;;
  urls) urls ;;
  stop-node) stop_node "${2:?node number 1-3}" ;;
  start-node) start_node "${2:?node number 1-3}" ;;
  kill-node) kill_node "${2:?node number 1-3}" ;;
  *) echo "usage: $0 start|stop|status|urls|stop-node N|start-node N|kill-node N" >&2; exit 2 ;;
esac
