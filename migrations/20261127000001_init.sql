-- jq schema v1. PostgreSQL is the only source of truth (SPEC §1).
-- Constraints make illegal data impossible even if code is wrong; indexes
-- are shaped for the hot queries (claim, reapers, listing) and partial where
-- they can be, so terminal rows stay out of the hot path (NFR-012).

CREATE TYPE job_status AS ENUM ('PENDING', 'ASSIGNED', 'RUNNING', 'DONE', 'FAILED', 'DEAD_LETTERED');
CREATE TYPE worker_status AS ENUM ('ONLINE', 'DRAINING', 'STOPPING', 'OFFLINE');

CREATE TABLE queues (
    name              text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    max_retries       integer NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 10000),
    default_ttl_s     integer CHECK (default_ttl_s > 0),
    default_timeout_s integer CHECK (default_timeout_s > 0),
    backoff_base_ms   bigint NOT NULL DEFAULT 5000 CHECK (backoff_base_ms > 0),
    backoff_max_ms    bigint NOT NULL DEFAULT 300000,
    -- JQ-140: cluster-wide caps, enforced in the claim under this row's lock.
    concurrency_limit integer CHECK (concurrency_limit > 0),
    rate_limit_per_s  double precision CHECK (rate_limit_per_s > 0),
    rate_tokens       double precision NOT NULL DEFAULT 0,
    rate_refilled_at  timestamptz NOT NULL DEFAULT now(),
    paused            boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (backoff_max_ms >= backoff_base_ms)
);

-- FR-027: the default queue exists from the first start.
INSERT INTO queues (name) VALUES ('default');

CREATE TABLE workers (
    id                text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    hostname          text NOT NULL,
    concurrency       integer NOT NULL CHECK (concurrency > 0),
    queues            text[] NOT NULL CHECK (cardinality(queues) > 0),
    status            worker_status NOT NULL DEFAULT 'ONLINE',
    version           text NOT NULL DEFAULT '',
    registered_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Heartbeat reaper: live workers by last heartbeat.
CREATE INDEX workers_live ON workers (last_heartbeat_at) WHERE status <> 'OFFLINE';

CREATE TABLE jobs (
    id                  uuid PRIMARY KEY,
    -- Tie breaker for jobs created in one transaction (same created_at).
    seq                 bigint GENERATED ALWAYS AS IDENTITY,
    queue               text NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    status              job_status NOT NULL DEFAULT 'PENDING',
    priority            smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    payload             bytea NOT NULL,
    result              bytea,
    error               text,
    -- Fencing token (JQ-110): +1 per claim, never reset.
    attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    retries             integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
    max_retries         integer NOT NULL CHECK (max_retries >= 0),
    worker_id           text,
    idempotency_key     text CHECK (length(idempotency_key) BETWEEN 1 AND 256),
    cancel_requested    boolean NOT NULL DEFAULT false,
    -- Last applied worker report, for idempotent result reporting.
    last_report_attempt integer,
    last_report_kind    text CHECK (last_report_kind IN ('SUCCEEDED', 'FAILED', 'CANCELLED')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    not_before          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz,
    assigned_at         timestamptz,
    started_at          timestamptz,
    completed_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT in_flight_has_lease CHECK (status NOT IN ('ASSIGNED', 'RUNNING') OR (worker_id IS NOT NULL AND attempt > 0)),
    CONSTRAINT retries_within_max CHECK (retries <= max_retries),
    CONSTRAINT cancel_only_while_running CHECK (NOT cancel_requested OR status = 'RUNNING'),
    CONSTRAINT report_kind_with_attempt CHECK ((last_report_attempt IS NULL) = (last_report_kind IS NULL))
);

-- The claim (FR-014): PENDING only, in dispatch order per queue.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, created_at, seq) WHERE status = 'PENDING';
-- JQ-101: idempotency keys unique per queue.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Worker reaper, heartbeat lease checks, per-queue concurrency counts.
CREATE INDEX jobs_in_flight ON jobs (worker_id) WHERE status IN ('ASSIGNED', 'RUNNING');
CREATE INDEX jobs_in_flight_queue ON jobs (queue) WHERE status IN ('ASSIGNED', 'RUNNING');
-- Assignment-timeout reaper.
CREATE INDEX jobs_assigned_at ON jobs (assigned_at) WHERE status = 'ASSIGNED';
-- TTL reaper.
CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE status = 'PENDING' AND expires_at IS NOT NULL;
-- Listing newest first (FR-032), overall and per queue; dead letters apart
-- for FR-035 listing and JQ-150 redrive.
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_queue_created ON jobs (queue, created_at DESC, id DESC);
CREATE INDEX jobs_dead_letters ON jobs (queue, created_at, seq) WHERE status = 'DEAD_LETTERED';

-- FR-011: one immutable row per transition, written with the state change.
CREATE TABLE job_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL,
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    queue       text NOT NULL,
    from_status job_status,
    to_status   job_status NOT NULL,
    reason      text NOT NULL,
    worker_id   text,
    attempt     integer NOT NULL,
    detail      text,
    occurred_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_events_job ON job_events (job_id, id);
-- Error rate in queue stats: attempts that ended.
CREATE INDEX job_events_attempt_end ON job_events (queue) WHERE from_status = 'RUNNING';

CREATE FUNCTION job_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'job_events rows are immutable';
END $$;

CREATE TRIGGER job_events_no_update BEFORE UPDATE ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_immutable();

-- JQ-160: transactional outbox. A self-contained copy of each event, written
-- in the same transaction, published by the relay, pruned after retention.
CREATE TABLE event_outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid NOT NULL,
    topic         text NOT NULL,
    partition_key text NOT NULL,
    job_id        uuid,
    queue         text,
    from_status   job_status,
    to_status     job_status,
    reason        text,
    worker_id     text,
    attempt       integer,
    detail        text,
    worker_status worker_status,
    active_jobs   integer,
    concurrency   integer,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz
);

CREATE INDEX event_outbox_unsent ON event_outbox (id) WHERE sent_at IS NULL;
CREATE INDEX event_outbox_sent ON event_outbox (sent_at) WHERE sent_at IS NOT NULL;
