# Start, stop or show the test services (see nix/services.nix).
dir="${JQ_SERVICES_DIR:-$PWD/.nix-services}"
pg_port=55432 redis_port=56379 kafka_port=59092 controller_port=59093
mkdir -p "$dir"

start() {
  if [ ! -f "$dir/pg/PG_VERSION" ]; then
    initdb -D "$dir/pg" -A trust -U postgres -E UTF8 >/dev/null
  fi
  pg_ctl -D "$dir/pg" -l "$dir/pg.log" -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" -w start
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  if [ ! -f "$dir/kafka/meta.properties" ]; then
    cat > "$dir/kafka.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/kafka
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
CONF
    kafka-storage.sh format -t "$(kafka-storage.sh random-uuid)" -c "$dir/kafka.properties" >/dev/null
  fi
  kafka-server-start.sh -daemon "$dir/kafka.properties"
  echo "PostgreSQL 127.0.0.1:$pg_port  Redis 127.0.0.1:$redis_port  Kafka 127.0.0.1:$kafka_port  (data in $dir)"
}

stop() {
  pg_ctl -D "$dir/pg" -m fast stop || true
  if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" || true; fi
  kafka-server-stop.sh || true
}

status() {
  pg_ctl -D "$dir/pg" status || true
  redis-cli -p "$redis_port" ping || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: jq-services start|stop|status" >&2; exit 2 ;;
esac
