-- jq schema v5, step 1 (issue 21, ADR 0016): finished jobs are pruned after
-- a retention. Per queue: NULL is the server's default
-- (`retention.done_s`, `retention.dead_lettered_s`), 0 keeps them until
-- deleted, n deletes them n seconds after they finished.
ALTER TABLE queues
    ADD COLUMN IF NOT EXISTS retain_done_s bigint CHECK (retain_done_s >= 0),
    ADD COLUMN IF NOT EXISTS retain_dead_s bigint CHECK (retain_dead_s >= 0);

-- The pruner walks each queue's finished jobs oldest first and stops at its
-- cutoff, so it reads only what it deletes: kept dead letters (FR-035's
-- default) are never scanned. On a large v4 history, build these first
-- with CREATE INDEX CONCURRENTLY under the same names; this migration then
-- finds them (ADR 0012's online-upgrade bar).
CREATE INDEX IF NOT EXISTS jobs_done_at ON jobs (queue, completed_at) WHERE status = 'DONE';
CREATE INDEX IF NOT EXISTS jobs_dead_at ON jobs (queue, completed_at) WHERE status = 'DEAD_LETTERED';
