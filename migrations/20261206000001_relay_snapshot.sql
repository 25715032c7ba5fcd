-- ADR 0020 (JQ-161): the relay no longer waits for the cluster's oldest
-- transaction. It publishes every committed job event as soon as its
-- transaction has ended, and keeps, besides `published_below`:
--
-- - `high`: every committed job event with a txid below it is published,
--   except those of the transactions in `pending`;
-- - `pending`: the transactions below `high` that were still running when
--   the relay last read (their events, if they commit, go next).
--
-- Catalog-only on a one-row table. `high` starts at the cursor: every
-- event below it is published, nothing above.
ALTER TABLE relay_cursor ADD COLUMN IF NOT EXISTS high bigint;
ALTER TABLE relay_cursor ADD COLUMN IF NOT EXISTS pending bigint[] NOT NULL DEFAULT '{}';
UPDATE relay_cursor SET high = published_below WHERE high IS NULL;
ALTER TABLE relay_cursor ALTER COLUMN high SET NOT NULL;
