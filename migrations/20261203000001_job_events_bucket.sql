-- jq schema v5, step 2a (issue 21, ADR 0017): `job_events` becomes range-
-- partitioned by `bucket`, the time a row was filed (or re-filed, when it
-- must outlive its partition). Three migrations, each its own transaction,
-- so that none holds writes for longer than a catalog change on a large
-- history:
--   a) this one: the column, with a constant default (no table rewrite),
--      and a constraint that will prove every v4 row belongs to the v4
--      partition, not yet validated (no scan);
--   b) the validation: one scan under SHARE UPDATE EXCLUSIVE, which lets
--      every reader and writer, a v4 server's included, go on;
--   c) the switch: rename, new partitioned parent, attach the v4 table as
--      its first partition (no scan: the constraint proves it).
ALTER TABLE job_events ADD COLUMN IF NOT EXISTS bucket timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE job_events ADD CONSTRAINT job_events_v4_bucket CHECK (bucket < '1970-01-01') NOT VALID;
