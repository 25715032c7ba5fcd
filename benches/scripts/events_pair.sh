#!/usr/bin/env bash
# JQ-161: publish lag and rate, base server against head server, both driven
# by the head's jq-bench `events` scenario (a burst with the relay on, then
# the same with a write transaction held open on another database),
# interleaved with the order alternating.
set -u
PG=${PG:-postgres://postgres@127.0.0.1:5432}
B=${BASE:?release bin dir of the base}; H=${HEAD:?release bin dir of the head}
JOBS=${JOBS:-20000}; HOLD=${HOLD:-30}
one() { "$H/jq-bench" --db-url "$PG/postgres" --server-bin "$1/jq-server" events --jobs "$JOBS" --hold-s "$HOLD" 2>/dev/null | grep '^{'; }
show() { python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); g=d['lag_ms']
    print(f\"  {sys.argv[1]:4} {d['scenario']:12} drain {d['jobs_per_s']:6.0f} jobs/s  events {d['events']} at {d['events_per_s']:6.0f}/s  lag p50 {g['p50_ms']:8.1f} p99 {g['p99_ms']:8.1f} max {g['max_ms']:8.1f} ms  open at end: {d['held_open_until_all_arrived']}\")
" "$1"; }
echo "events pairs, $JOBS jobs, hold ${HOLD}s, $(date +%H:%M)"
for i in $(seq 1 ${PAIRS:-2}); do
  if (( i % 2 )); then one "$B" | show base; one "$H" | show head
  else one "$H" | show head; one "$B" | show base; fi
done
echo "end $(date +%H:%M)"
