-- 0005: the index the scheduler's claim (storage/dispatch.c, dispatch_claim) walks.
--
-- The claim takes, for each plan that has an agent with room, the oldest due rows of the highest
-- priority: WHERE status = 'queued' AND plan = $plan ORDER BY priority DESC, created_at, id LIMIT n.
-- call_queue_claim_idx (0001) ends in next_attempt_at, not id, so the planner had to fetch and sort
-- every queued row to honour the ORDER BY (37 ms per claim with 3,000 queued, bench/b4-dispatch),
-- and rows of a plan without room were read on every claim. This index gives the rows of one plan
-- in claim order: a claim reads only the rows it takes (plus those whose booking or retry time
-- says not yet). It replaces call_queue_claim_idx, which nothing else reads: one index less to
-- write on every enqueue and claim.
CREATE INDEX call_queue_due_idx ON call_queue (plan, priority DESC, created_at, id) WHERE status = 'queued';
DROP INDEX call_queue_claim_idx;
