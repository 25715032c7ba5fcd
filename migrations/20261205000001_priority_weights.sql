-- Priority weights (FR-025, issue 23, ADR 0019). `priority_weights` is the
-- canonical form `9:8,5:3,0:1` (validated by jq-core; NULL is strict
-- priority). `priority_credit` is the smooth weighted round-robin's state,
-- one credit per band, read and written under the queue row's lock by every
-- claim, so all replicas continue one sequence; NULL starts it afresh (a
-- change of weights resets it). Catalog-only: no rewrite of `queues`.
ALTER TABLE queues
    ADD COLUMN IF NOT EXISTS priority_weights text,
    ADD COLUMN IF NOT EXISTS priority_credit bigint[];
