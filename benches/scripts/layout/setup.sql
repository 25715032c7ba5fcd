-- Issue 21 item 3: which layout of `jobs` makes the lifecycle cheapest?
-- psql -v n=3000000 -f setup.sql (drops and creates database layout_exp)
DROP DATABASE IF EXISTS layout_exp;
CREATE DATABASE layout_exp;
\c layout_exp
CREATE TYPE job_status AS ENUM ('PENDING', 'ASSIGNED', 'RUNNING', 'DONE', 'FAILED', 'DEAD_LETTERED');
-- t1: one table, as jobs is today; live + done: live rows apart from finished ones
DO $$
DECLARE t text;
BEGIN
FOREACH t IN ARRAY ARRAY['t1', 'live', 'done'] LOOP
EXECUTE format($f$
CREATE TABLE %1$I (
    id uuid PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY, queue text NOT NULL,
    status job_status NOT NULL DEFAULT 'PENDING', priority smallint NOT NULL DEFAULT 0,
    payload bytea NOT NULL, result bytea, error text, attempt integer NOT NULL DEFAULT 0,
    retries integer NOT NULL DEFAULT 0, max_retries integer NOT NULL, worker_id text,
    idempotency_key text, cancel_requested boolean NOT NULL DEFAULT false,
    last_report_attempt integer, last_report_kind text,
    created_at timestamptz NOT NULL DEFAULT now(), not_before timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz, assigned_at timestamptz, started_at timestamptz, completed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now())$f$, t);
EXECUTE format('CREATE INDEX ON %1$I (queue, priority DESC, created_at, seq) WHERE status = ''PENDING''', t);
EXECUTE format('CREATE UNIQUE INDEX ON %1$I (queue, idempotency_key) WHERE idempotency_key IS NOT NULL', t);
EXECUTE format('CREATE INDEX ON %1$I (worker_id) WHERE status IN (''ASSIGNED'', ''RUNNING'')', t);
EXECUTE format('CREATE INDEX ON %1$I (queue) WHERE status IN (''ASSIGNED'', ''RUNNING'')', t);
EXECUTE format('CREATE INDEX ON %1$I (assigned_at) WHERE status = ''ASSIGNED''', t);
EXECUTE format('CREATE INDEX ON %1$I (expires_at) WHERE status = ''PENDING'' AND expires_at IS NOT NULL', t);
EXECUTE format('CREATE INDEX ON %1$I (queue, created_at, seq) WHERE status = ''DEAD_LETTERED''', t);
EXECUTE format('CREATE INDEX ON %1$I (queue) WHERE status = ''FAILED''', t);
EXECUTE format('CREATE INDEX ON %1$I (seq)', t);
EXECUTE format('CREATE INDEX ON %1$I (queue, seq)', t);
EXECUTE format('CREATE INDEX ON %1$I (queue, completed_at) WHERE status = ''DONE''', t);
EXECUTE format('CREATE INDEX ON %1$I (queue, completed_at) WHERE status = ''DEAD_LETTERED''', t);
END LOOP;
END $$;
-- history: N finished jobs
INSERT INTO t1 (id, queue, status, payload, max_retries, attempt, worker_id, completed_at)
  SELECT gen_random_uuid(), 'default', 'DONE', '\x7b7d', 3, 1, 'w', now() FROM generate_series(1, :n);
INSERT INTO done (id, queue, status, payload, max_retries, attempt, worker_id, completed_at)
  SELECT gen_random_uuid(), 'default', 'DONE', '\x7b7d', 3, 1, 'w', now() FROM generate_series(1, :n);
-- t7: one table whose indexes name `stage` (0 pending, 1 in flight, 2 failed,
-- 3 done, 4 dead-lettered) instead of `status`, so the ack (ASSIGNED ->
-- RUNNING, same stage) is a HOT update; fillfactor leaves it room.
CREATE TABLE t7 (LIKE t1 INCLUDING DEFAULTS) WITH (fillfactor = 85);
ALTER TABLE t7 ADD COLUMN stage smallint NOT NULL DEFAULT 0;
ALTER TABLE t7 ADD PRIMARY KEY (id);
CREATE INDEX ON t7 (queue, priority DESC, created_at, seq) WHERE stage = 0;
CREATE UNIQUE INDEX ON t7 (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX ON t7 (worker_id) WHERE stage = 1;
CREATE INDEX ON t7 (queue) WHERE stage = 1;
CREATE INDEX ON t7 (assigned_at) WHERE stage = 1;
CREATE INDEX ON t7 (expires_at) WHERE stage = 0 AND expires_at IS NOT NULL;
CREATE INDEX ON t7 (queue, created_at, seq) WHERE stage = 4;
CREATE INDEX ON t7 (queue) WHERE stage = 2;
CREATE INDEX ON t7 (seq);
CREATE INDEX ON t7 (queue, seq);
CREATE INDEX ON t7 (queue, completed_at) WHERE stage = 3;
CREATE INDEX ON t7 (queue, completed_at) WHERE stage = 4;
CREATE SEQUENCE t7_seq;
ALTER TABLE t7 ALTER COLUMN seq SET DEFAULT nextval('t7_seq');
INSERT INTO t7 (id, queue, status, payload, max_retries, attempt, worker_id, completed_at, stage, seq)
  SELECT gen_random_uuid(), 'default', 'DONE', '\x7b7d', 3, 1, 'w', now(), 3, nextval('t7_seq') FROM generate_series(1, :n);
VACUUM ANALYZE;
-- ev: job_events as jq has it (partitioned by bucket, three indexes), for
-- the *_ev scripts, which write each transition's event with it.
CREATE SEQUENCE ev_ids;
CREATE TABLE ev (
    id bigint NOT NULL DEFAULT nextval('ev_ids'), event_id uuid NOT NULL, job_id uuid NOT NULL,
    queue text NOT NULL, from_status job_status, to_status job_status NOT NULL, reason text NOT NULL,
    worker_id text, attempt integer NOT NULL, detail text, occurred_at timestamptz NOT NULL DEFAULT now(),
    txid bigint DEFAULT pg_current_xact_id()::text::bigint, bucket timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (bucket);
CREATE INDEX ON ev (job_id, id);
CREATE INDEX ON ev (queue) WHERE from_status = 'RUNNING';
CREATE INDEX ON ev (txid) WHERE txid IS NOT NULL;
CREATE TABLE ev_now PARTITION OF ev FOR VALUES FROM (now() - interval '1 day') TO (now() + interval '30 days');
