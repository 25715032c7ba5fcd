-- jq schema v2 (ADR 0008): job_events no longer has a foreign key to jobs.
-- Every event row is written by the same statement that inserts or updates
-- its job (the CTEs join on the changed rows), so an event cannot name a
-- job that does not exist; the key only added a per-row check (a lookup and
-- a row lock on jobs, about a sixth of a bulk submit's database time).
-- Deleting a job or a queue deletes the history explicitly instead of by
-- cascade.
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey;

-- The queue-depth gauge counts FAILED jobs per queue; without an index of
-- its own that count read every row. FAILED is transient (a retry or dead
-- letter follows in the same transaction), so this index is nearly empty.
CREATE INDEX jobs_failed ON jobs (queue) WHERE status = 'FAILED';
