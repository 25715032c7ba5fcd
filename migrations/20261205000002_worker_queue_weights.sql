-- Weighted queues for workers (JQ-123, issue 23, ADR 0019): one weight per
-- entry of `queues`, NULL when the worker gave none (its queues then share
-- by dispatch order, FR-014). Shown by `jq-ctl worker list`; the
-- dispatcher of the server the worker streams from applies them.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS queue_weights integer[];
