-- Periodic schedules (JQ-124, issue 23, ADR 0019).
--
-- The occurrence a schedule submitted a job for: handed to the worker
-- (JQ_SCHEDULED_AT). NULL for every other job; catalog-only.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS scheduled_at timestamptz;

-- One row a schedule. `next_at` is the next occurrence, computed from the
-- database's clock; every server's schedule service claims due rows with
-- FOR UPDATE SKIP LOCKED (no leader) and, in the same transaction,
-- submits each occurrence's job under the idempotency key
-- `schedule:<name>:<occurrence>` and moves `next_at` on. The job template
-- is checked as a submit is; the queue is checked at create and again at
-- each firing (a queue deleted since is recorded in `last_error`).
CREATE TABLE IF NOT EXISTS schedules (
    name          text PRIMARY KEY,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    queue         text NOT NULL,
    priority      smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    max_retries   integer CHECK (max_retries >= 0),
    ttl_s         integer CHECK (ttl_s >= 1),
    payload       bytea NOT NULL,
    missed        text NOT NULL DEFAULT 'once' CHECK (missed IN ('skip', 'once', 'all')),
    overlap       text NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'skip')),
    paused        boolean NOT NULL DEFAULT false,
    next_at       timestamptz,
    -- The occurrence last submitted, and its job (overlap skip reads it).
    last_fired_at timestamptz,
    last_job_id   uuid,
    fires         bigint NOT NULL DEFAULT 0,
    skipped       bigint NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_at) WHERE NOT paused;
