#!/usr/bin/env bash
# Pruning cost, old way (events deleted row by row with their jobs) against
# the new (jobs deleted, history dropped with its partition), same data,
# same schema (head's migrations), back to back. N jobs, 4 events each.
set -euo pipefail
N=${N:-200000}
P="psql -q -X -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1"
setup() {
  $P -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" postgres
  for f in "$(dirname "$0")"/../../migrations/*.sql; do $P -1 -f "$f" -d $1 >/dev/null; done
  $P -d $1 <<SQL
SET client_min_messages = warning;
CREATE TABLE job_events_old (LIKE job_events);
ALTER TABLE job_events ATTACH PARTITION job_events_old FOR VALUES FROM ('2026-01-01') TO ('2026-01-02');
INSERT INTO jobs (id, queue, status, payload, max_retries, attempt, started_at, completed_at)
  SELECT gen_random_uuid(), 'default', 'DONE', '\x7b7d', 3, 1, now() - interval '30 days', now() - interval '30 days'
  FROM generate_series(1, $N);
INSERT INTO job_events (event_id, job_id, queue, from_status, to_status, reason, attempt, bucket)
  SELECT gen_random_uuid(), j.id, 'default', NULL, 'PENDING', 'SUBMITTED', s, '2026-01-01 12:00'
  FROM jobs j CROSS JOIN generate_series(1, 4) s;
VACUUM (ANALYZE) jobs; VACUUM (ANALYZE) job_events_old;
SQL
}
wal() { $P -At -c "SELECT pg_current_wal_lsn()" postgres; }
walbytes() { $P -At -c "SELECT pg_wal_lsn_diff('$2', '$1')" postgres; }
size() { $P -At -d $1 -c "SELECT pg_size_pretty(coalesce(sum(pg_total_relation_size(inhrelid)),0)) FROM pg_inherits WHERE inhparent = 'job_events'::regclass"; }
# Delete the DONE jobs in batches of 5,000, as prune_finished does, with
# $2 run first for each batch's events.
prune_jobs() {
  $P -d $1 <<SQL
DO \$\$
DECLARE ids uuid[];
BEGIN
  LOOP
    SELECT array_agg(id) INTO ids FROM (SELECT id FROM jobs WHERE status = 'DONE' ORDER BY completed_at LIMIT 5000 FOR UPDATE SKIP LOCKED) d;
    EXIT WHEN ids IS NULL;
    $2;
    DELETE FROM jobs WHERE id = ANY(ids);
    COMMIT;
  END LOOP;
END \$\$;
SQL
}
old_way() {  # v5 step 1: every event deleted with its job
  prune_jobs $1 "DELETE FROM job_events WHERE job_id = ANY(ids)"
}
new_way() {  # ADR 0017: only kept-partition rows; the partition dropped after
  prune_jobs $1 "DELETE FROM job_events WHERE bucket = 'infinity' AND job_id = ANY(ids)"
  # what expire_event_partitions runs: the read of surviving jobs, detach, drop
  $P -d $1 -c "SELECT count(DISTINCT e.job_id) FROM job_events_old e WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)" >/dev/null
  $P -d $1 -c "ALTER TABLE job_events DETACH PARTITION job_events_old CONCURRENTLY"
  $P -d $1 -c "DROP TABLE job_events_old"
}
run() { # $1 way $2 db
  local w0 t0 t1 w1
  w0=$(wal); t0=$(date +%s.%N)
  $1 $2
  t1=$(date +%s.%N); w1=$(wal)
  printf '%-8s %6.2f s  WAL %5d MiB  job_events after: %s\n' "$1" "$(echo "$t1 - $t0" | bc)" $(( $(walbytes $w0 $w1) / 1048576 )) "$(size $2)"
}
for round in 1 2 3; do
  setup prune_a; setup prune_b
  echo "round $round ($N jobs, $((4 * N)) events; job_events before: $(size prune_a))"
  if (( round % 2 )); then run old_way prune_a; run new_way prune_b; else run new_way prune_b; run old_way prune_a; fi
done
$P -c "DROP DATABASE prune_a" -c "DROP DATABASE prune_b" postgres
