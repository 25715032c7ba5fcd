-- Storage v5 (ADR 0018): the phase of every row that is not done, found
-- through the partial indexes of its status (live rows and dead letters;
-- done rows read 3 from the column's default). Row locks only: a server
-- of the previous version goes on meanwhile, and what it writes the
-- trigger sets right.
UPDATE jobs SET phase = 0 WHERE status = 'PENDING' AND phase <> 0;
UPDATE jobs SET phase = 1 WHERE status IN ('ASSIGNED', 'RUNNING') AND phase <> 1;
UPDATE jobs SET phase = 2 WHERE status = 'FAILED' AND phase <> 2;
UPDATE jobs SET phase = 4 WHERE status = 'DEAD_LETTERED' AND phase <> 4;
