-- jq schema v3 (ADR 0011): job listing is ordered by `seq` (submission
-- order, newest first) instead of (created_at, id).
--
-- A job changes status three or four times, and a status change can never
-- be a HOT update (status is in partial-index predicates), so every index
-- on jobs gets a new entry at every transition. The two listing indexes
-- keyed on (created_at DESC, id DESC) were the most expensive of them: with
-- them replaced by these narrower keys, a lifecycle of updates took about a
-- third less time (docs/benchmarks.md, session 7).
--
-- On a large table, build the new indexes first with CREATE INDEX
-- CONCURRENTLY under the same names; this migration then only drops.
CREATE INDEX IF NOT EXISTS jobs_list ON jobs (seq);
CREATE INDEX IF NOT EXISTS jobs_queue_list ON jobs (queue, seq);
DROP INDEX IF EXISTS jobs_created;
DROP INDEX IF EXISTS jobs_queue_created;
