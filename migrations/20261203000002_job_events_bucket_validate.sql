-- jq schema v5, step 2b (ADR 0017): prove the v4 rows' partition once.
-- SHARE UPDATE EXCLUSIVE: job writes go on while it reads the table.
ALTER TABLE job_events VALIDATE CONSTRAINT job_events_v4_bucket;
