-- jq schema v4 (ADR 0012): `job_events` doubles as the outbox of job
-- events. A transition writes one event row instead of two (the event and
-- its outbox copy), and publishing writes nothing per event: the relay
-- keeps one cursor instead of marking each row sent.
--
-- `txid` is the writing transaction's id. Rows of a transaction whose id is
-- below the oldest id still running can no longer appear, so the relay
-- publishes by transaction-id windows: every event of the transactions in
-- [published_below, xmin) is final and visible, whatever order they
-- committed in. Rows written before this migration have no `txid`; their
-- outbox copies in `event_outbox` are published as before, and new job
-- events no longer get one. `event_outbox` keeps worker events and the
-- events of deleted jobs that were not yet published.
ALTER TABLE job_events ADD COLUMN IF NOT EXISTS txid bigint;
ALTER TABLE job_events ALTER COLUMN txid SET DEFAULT pg_current_xact_id()::text::bigint;
CREATE INDEX IF NOT EXISTS job_events_txid ON job_events (txid) WHERE txid IS NOT NULL;

-- The relay's cursor: every job event with txid below it is published.
-- It starts at the oldest transaction running now: any transaction that
-- could still write an event without an outbox copy is at or above it.
CREATE TABLE relay_cursor (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    published_below bigint NOT NULL
);
INSERT INTO relay_cursor (published_below)
VALUES (pg_snapshot_xmin(pg_current_snapshot())::text::bigint);

-- Copies of a deleted job's unpublished events carry no topic: the relay
-- derives a job event's topic from its statuses (jq_core::events).
ALTER TABLE event_outbox ALTER COLUMN topic DROP NOT NULL;
