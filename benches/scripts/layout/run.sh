#!/usr/bin/env bash
# One round: each layout's lifecycle (insert, claim, ack, done: four
# autocommit statements per job) for SECS seconds, after a checkpoint and
# vacuum; prints jobs/s and WAL bytes per job. Interleave rounds, e.g.
#   for r in 1 2 3; do ./run.sh; done
#   PGOPTIONS="-c synchronous_commit=off" CLIENTS=8 ./run.sh   # CPU-bound
set -u
cd "$(dirname "$0")"
db="-h ${PGHOST:-127.0.0.1} -U postgres -d layout_exp"
for t in ${LAYOUTS:-one_table live_apart hot_ack}; do
  for c in CHECKPOINT "VACUUM t1" "VACUUM live" "VACUUM done" "VACUUM t7" "VACUUM ev"; do psql $db -qc "$c"; done
  w0=$(psql $db -Atc "select pg_current_wal_lsn()")
  out=$(pgbench $db -M prepared -n -c "${CLIENTS:-4}" -j 2 -T "${SECS:-30}" -f "$t.pgb" 2>&1)
  w1=$(psql $db -Atc "select pg_current_wal_lsn()")
  tps=$(echo "$out" | grep -oP 'tps = \K[0-9.]+' | head -1)
  n=$(echo "$out" | grep -oP 'number of transactions actually processed: \K[0-9]+')
  wal=$(psql $db -Atc "select pg_wal_lsn_diff('$w1','$w0')")
  echo "$(date +%T) $t jobs/s=${tps%.*} wal_per_job=$((wal / n))"
done
