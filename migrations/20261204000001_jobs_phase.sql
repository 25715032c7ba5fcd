-- Storage v5, issue 21 item 3 (ADR 0018): the ack becomes a HOT update.
--
-- An update is HOT (no new index entries, the new row version on the same
-- page) only when no column any index names changes. Every partial index
-- of `jobs` names `status` in its predicate, so every transition wrote an
-- entry into every index of the table. `phase` says what the indexes need
-- (0 pending, 1 in flight: ASSIGNED or RUNNING, 2 failed, 3 done, 4 dead
-- letter): the ack (ASSIGNED -> RUNNING) keeps its phase, so once the
-- indexes name `phase` instead of `status` (jq-store `layout.rs` builds
-- them concurrently and drops the old ones), the ack writes no index.
--
-- Online on a large table: the column is added with a constant default,
-- so it is catalog-only and every existing row reads 3 (done: the bulk of
-- any history); the next migration sets the others, found through their
-- partial indexes. A trigger keeps `phase` in step with `status` for any
-- writer that does not set it: a server of the previous version during the
-- upgrade, or an operator's SQL. jq's own writes set it, so the trigger's
-- condition is false for them and its function is not called.
SET LOCAL lock_timeout = '10s';

ALTER TABLE jobs ADD COLUMN phase smallint NOT NULL DEFAULT 3;
ALTER TABLE jobs ALTER COLUMN phase SET DEFAULT 0;
-- Room on each page for the ack's new row version (new pages only).
ALTER TABLE jobs SET (fillfactor = 85);

CREATE FUNCTION jobs_phase_of(s job_status) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE s WHEN 'PENDING' THEN 0 WHEN 'ASSIGNED' THEN 1 WHEN 'RUNNING' THEN 1
                  WHEN 'FAILED' THEN 2 WHEN 'DONE' THEN 3 ELSE 4 END;

CREATE FUNCTION jobs_set_phase() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.phase := jobs_phase_of(NEW.status);
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_phase BEFORE INSERT OR UPDATE OF status, phase ON jobs
    FOR EACH ROW WHEN (NEW.phase IS DISTINCT FROM jobs_phase_of(NEW.status))
    EXECUTE FUNCTION jobs_set_phase();

-- When the indexes that name `status` may go: at once on a new database;
-- on one with jobs, after a grace that lets servers of the previous
-- version (whose queries need them) be replaced by a rolling upgrade.
CREATE TABLE jobs_layout (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    status_indexes_until timestamptz NOT NULL
);
INSERT INTO jobs_layout (status_indexes_until)
SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs) THEN now() + interval '15 minutes' ELSE now() END;
