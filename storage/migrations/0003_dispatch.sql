-- 0003_dispatch.sql — what call dispatch (storage/dispatch.c, storage/accounts.c) needs beyond
-- 0001_schema.sql and 0002_payment_checks.sql.
--
-- * call_queue.dial_started_at: when the current attempt was assigned to an agent (the claim).
-- * call_queue.claim_seq: bumped by every claim. A claim is one try at dialling; the dialer quotes
--   the number it was given when it reports the outcome of a try that has no VAPI call id yet
--   (dispatch_started, dispatch_settle by booking, dispatch_requeue_lost), so a late answer about
--   an earlier try can never be applied to a later one.
-- * call_queue_vapi_call_id_key: webhooks name the call; a call id belongs to one queue row (a
--   retry clears it before the next attempt gets its own).
-- * active_calls.monitor_at: when the duration monitor last took the row (dispatch_overdue,
--   dispatch_quiet stamp it with SKIP LOCKED), so several daemons do not end or look up one call at
--   once, and a call is looked at again only after a pause.
-- None of the new columns is personal: granted to sweety_reporting like their neighbours.

ALTER TABLE call_queue
    ADD COLUMN dial_started_at timestamptz,
    ADD COLUMN claim_seq integer NOT NULL DEFAULT 0;

CREATE UNIQUE INDEX call_queue_vapi_call_id_key ON call_queue (vapi_call_id) WHERE vapi_call_id IS NOT NULL;

ALTER TABLE active_calls
    ADD COLUMN monitor_at timestamptz;

CREATE INDEX active_calls_last_event_at_idx ON active_calls (last_event_at);

GRANT SELECT (dial_started_at, claim_seq) ON call_queue TO sweety_reporting;
GRANT SELECT (monitor_at) ON active_calls TO sweety_reporting;
