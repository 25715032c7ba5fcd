#!/usr/bin/env bash
# burst and latency, base against head, interleaved, order alternating.
set -u
PG=${PG:-postgres://postgres@127.0.0.1:5432}
B=${BASE:?release bin dir of the base}; H=${HEAD:?release bin dir of the head}
one() { "$1/jq-bench" --db-url "$PG/postgres" --server-bin "$1/jq-server" "${@:2}" 2>/dev/null | grep '^{' | head -1; }
num() { python3 -c "import json,sys; d=json.loads(sys.stdin.read() or '{}'); v=d
for k in sys.argv[1].split('.'): v=v.get(k,{}) if isinstance(v,dict) else {}
print(v if v!={} else 'nan')" "$1"; }
echo "burst pairs (base, head) $(date +%H:%M)"
for i in $(seq 1 ${PAIRS:-10}); do
  if (( i % 2 )); then b=$(one $B burst --jobs 20000 | num jobs_per_s); h=$(one $H burst --jobs 20000 | num jobs_per_s)
  else h=$(one $H burst --jobs 20000 | num jobs_per_s); b=$(one $B burst --jobs 20000 | num jobs_per_s); fi
  printf '(%.0f, %.0f)\n' "$b" "$h"
done
echo "latency pairs (base; head) p50 p99 ms $(date +%H:%M)"
for i in 1 2 3 4; do
  if (( i % 2 )); then b=$(one $B latency --rate 500 --seconds 10); h=$(one $H latency --rate 500 --seconds 10)
  else h=$(one $H latency --rate 500 --seconds 10); b=$(one $B latency --rate 500 --seconds 10); fi
  echo "p50 $(echo "$b" | num submit_to_start.p50_ms); $(echo "$h" | num submit_to_start.p50_ms)   p99 $(echo "$b" | num submit_to_start.p99_ms); $(echo "$h" | num submit_to_start.p99_ms)"
done
echo "end $(date +%H:%M)"
