-- What the daemon reads while nothing is due stays the same size whatever the
-- tables hold (docs/scaling.md, "Idle cost").
--
-- The retention sweep finds rows past their retention through these indexes
-- on finished rows, by the time it compares, instead of reading every row of
-- the table. Each claim adds one entry to one of them (the row it finishes).
CREATE INDEX IF NOT EXISTS notification_schedule_done_idx
    ON notification_schedule ((coalesce(sent_at, notification_time))) WHERE sent;
CREATE INDEX IF NOT EXISTS game_status_schedule_done_idx
    ON game_status_schedule ((coalesce(executed_at, transition_time))) WHERE executed;
CREATE INDEX IF NOT EXISTS scheduled_message_done_idx
    ON scheduled_message ((coalesce(sent_at, deliver_at)))
    WHERE state IN ('sent', 'expired', 'cancelled');

-- The planner's estimate of how many rows `query` returns, read from the
-- table's statistics without running it: the schedule gauges count exactly up
-- to a bound and estimate past it (docs/observability.md).
CREATE OR REPLACE FUNCTION notification_scheduler_row_estimate(query text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    plan json;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || query INTO plan;
    RETURN round((plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric)::bigint;
END
$$;
