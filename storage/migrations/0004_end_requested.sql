-- 0004: the duration monitor's two sweeps keep separate stamps.
--
-- dispatch_quiet (look a silent call up) and dispatch_overdue (end a call past its plan's length)
-- both stamped active_calls.monitor_at, so a lookup of a quiet call hid it from the overdue sweep
-- for DISPATCH_RECHECK_S and the call ran that much past its length. The overdue sweep now stamps
-- end_requested_at instead.
ALTER TABLE active_calls ADD COLUMN end_requested_at timestamptz;
GRANT SELECT (end_requested_at) ON active_calls TO sweety_reporting;
