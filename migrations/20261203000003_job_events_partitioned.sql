-- jq schema v5, step 2c (ADR 0017): `job_events` is a partitioned table.
-- Catalog changes only: the v4 table is attached as partition
-- `job_events_v4` without a scan (its validated CHECK proves the range)
-- and keeps its indexes, which become the partitions' of the new
-- parent's. A v4 server still running writes through the same name: its
-- rows take the parent's defaults and land in the current partition.
--
-- The rename needs ACCESS EXCLUSIVE for a moment; waiting behind a long
-- transaction would stall every job write queued behind it, so give up
-- instead (the server's start fails with the lock timeout and is retried).
SET LOCAL lock_timeout = '10s';

ALTER TABLE job_events RENAME TO job_events_v4;
ALTER INDEX job_events_job RENAME TO job_events_v4_job;
ALTER INDEX job_events_attempt_end RENAME TO job_events_v4_attempt_end;
ALTER INDEX job_events_txid RENAME TO job_events_v4_txid;
DROP TRIGGER job_events_no_update ON job_events_v4;

-- Identity columns are not supported on a partitioned table before
-- PostgreSQL 17: a sequence default carries the ids on from the v4 ones.
CREATE SEQUENCE job_event_ids AS bigint;
SELECT setval('job_event_ids', coalesce((SELECT max(id) FROM job_events_v4), 0) + 1, false);

CREATE TABLE job_events (
    id          bigint NOT NULL DEFAULT nextval('job_event_ids'),
    event_id    uuid NOT NULL,
    job_id      uuid NOT NULL,
    queue       text NOT NULL,
    from_status job_status,
    to_status   job_status NOT NULL,
    reason      text NOT NULL,
    worker_id   text,
    attempt     integer NOT NULL,
    detail      text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    txid        bigint DEFAULT pg_current_xact_id()::text::bigint,
    -- When the row was filed: its partition. Equal to `occurred_at` until
    -- the partition maintainer re-files a row that must outlive its
    -- partition ('infinity': kept with a job kept until deleted).
    bucket      timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (bucket);
ALTER SEQUENCE job_event_ids OWNED BY job_events.id;

CREATE INDEX job_events_job ON job_events (job_id, id);
CREATE INDEX job_events_attempt_end ON job_events (queue) WHERE from_status = 'RUNNING';
CREATE INDEX job_events_txid ON job_events (txid) WHERE txid IS NOT NULL;

-- Events are immutable, except for the partition maintainer moving a row
-- to another partition (its `bucket`, nothing else).
CREATE OR REPLACE FUNCTION job_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) - 'bucket' = to_jsonb(OLD) - 'bucket' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'job_events rows are immutable';
END $$;
CREATE TRIGGER job_events_no_update BEFORE UPDATE ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_immutable();

ALTER TABLE job_events ATTACH PARTITION job_events_v4 FOR VALUES FROM (MINVALUE) TO ('1970-01-01');
ALTER TABLE job_events_v4 DROP CONSTRAINT job_events_v4_bucket;
ALTER TABLE job_events_v4 ALTER COLUMN bucket DROP DEFAULT;

-- Rows of jobs kept until deleted, re-filed out of expiring partitions.
CREATE TABLE job_events_kept PARTITION OF job_events FOR VALUES FROM ('infinity') TO (MAXVALUE);

-- The partition holding now and the next one, of the server's
-- `retention.partition_s` (the migrating server sets `jq.partition_s` on
-- its connection; one day without it), aligned as the maintainer aligns
-- them (to whole widths since the Unix epoch, UTC). Every server's
-- partition maintainer keeps creating them ahead from here, so an insert
-- always finds its partition.
DO $$
DECLARE
    w bigint := coalesce(nullif(current_setting('jq.partition_s', true), ''), '86400')::bigint;
    lo timestamptz := to_timestamp(floor(extract(epoch FROM now()) / w) * w);
BEGIN
    FOR i IN 0..1 LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF job_events FOR VALUES FROM (%L) TO (%L)',
                       'job_events_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS')
                           || '_' || to_char((lo + make_interval(secs => w)) AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS'),
                       lo, lo + make_interval(secs => w));
        lo := lo + make_interval(secs => w);
    END LOOP;
END $$;
