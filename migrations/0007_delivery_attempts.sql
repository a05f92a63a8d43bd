-- Per-message failure handling for every kind (docs/DELIVERY.md, "What happens
-- to a message that cannot be delivered"). A row the broker returns or refuses
-- is tried again after a growing delay, without holding up any other row, and
-- after DELIVERY_MAX_ATTEMPTS it is dead-lettered: kept, counted and listed
-- until retried or discarded. scheduled_message counts attempts from 0006 and
-- also marks a dead letter with state = 'dead_lettered'.
ALTER TABLE notification_schedule
    -- Publishes the broker answered: confirmed, returned or refused.
    ADD COLUMN IF NOT EXISTS attempts         integer     NOT NULL DEFAULT 0,
    -- Why the broker last refused it.
    ADD COLUMN IF NOT EXISTS last_error       text        NULL,
    -- Not claimed before this (set after a refusal).
    ADD COLUMN IF NOT EXISTS next_attempt_at  timestamptz NULL,
    -- Set when it was dead-lettered; it is not delivered while set.
    ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz NULL;

ALTER TABLE game_status_schedule
    ADD COLUMN IF NOT EXISTS attempts         integer     NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_error       text        NULL,
    ADD COLUMN IF NOT EXISTS next_attempt_at  timestamptz NULL,
    ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz NULL;

ALTER TABLE scheduled_message
    ADD COLUMN IF NOT EXISTS last_error       text        NULL,
    ADD COLUMN IF NOT EXISTS next_attempt_at  timestamptz NULL,
    ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz NULL;

-- outcome gains 'dead_lettered' (set while the row is a dead letter) and
-- 'discarded' (a dead letter an operator gave up on: done, never delivered).
ALTER TABLE notification_schedule DROP CONSTRAINT IF EXISTS notification_schedule_outcome_check;
ALTER TABLE notification_schedule
    ADD CONSTRAINT notification_schedule_outcome_check
    CHECK (outcome IN ('published', 'skipped_stale', 'dead_lettered', 'discarded'));

-- Rows waiting out a retry delay, found by the next-due query without reading
-- the pending index past them; and dead letters, counted and listed. Both sets
-- are small: only rows the broker refused.
CREATE INDEX IF NOT EXISTS notification_schedule_retry_idx
    ON notification_schedule (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS notification_schedule_dead_letter_idx
    ON notification_schedule (dead_lettered_at) WHERE dead_lettered_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS game_status_schedule_retry_idx
    ON game_status_schedule (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS game_status_schedule_dead_letter_idx
    ON game_status_schedule (dead_lettered_at) WHERE dead_lettered_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS scheduled_message_retry_idx
    ON scheduled_message (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS scheduled_message_dead_letter_idx
    ON scheduled_message (dead_lettered_at) WHERE dead_lettered_at IS NOT NULL;

-- A dead letter is not pending. The triggers notify when rows become
-- deliverable again: re-queued from the dead letters, or their retry time
-- moved. Otherwise as in 0003_notify_trigger.sql and 0005.
CREATE OR REPLACE FUNCTION notification_schedule_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT min(n.notification_time) INTO earliest
          FROM new_rows n
         WHERE NOT n.sent AND n.dead_lettered_at IS NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE NOT sent AND dead_lettered_at IS NULL) THEN
            RETURN NULL;
        END IF;
        SELECT min(t) INTO earliest FROM (
            SELECT n.notification_time AS t
              FROM new_rows n
              LEFT JOIN old_rows o ON o.id = n.id
             WHERE NOT n.sent AND n.dead_lettered_at IS NULL
               AND (o.id IS NULL OR o.sent OR o.dead_lettered_at IS NOT NULL
                    OR o.notification_time <> n.notification_time
                    OR o.next_attempt_at IS DISTINCT FROM n.next_attempt_at)
            UNION ALL
            SELECT o.notification_time
              FROM old_rows o
              JOIN new_rows n ON n.id = o.id
             WHERE NOT o.sent AND NOT n.sent AND n.dead_lettered_at IS NULL
               AND o.notification_time <> n.notification_time
        ) AS changed;
    ELSE
        SELECT min(o.notification_time) INTO earliest
          FROM old_rows o
         WHERE NOT o.sent AND o.dead_lettered_at IS NULL;
    END IF;

    IF earliest IS NOT NULL THEN
        PERFORM pg_notify(
            'notification_schedule_changed',
            json_build_object('operation', TG_OP, 'earliest_notification_time', earliest)::text
        );
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION game_status_schedule_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT min(n.transition_time) INTO earliest
          FROM new_rows n
         WHERE NOT n.executed AND n.dead_lettered_at IS NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE NOT executed AND dead_lettered_at IS NULL) THEN
            RETURN NULL;
        END IF;
        SELECT min(t) INTO earliest FROM (
            SELECT n.transition_time AS t
              FROM new_rows n
              LEFT JOIN old_rows o ON o.id = n.id
             WHERE NOT n.executed AND n.dead_lettered_at IS NULL
               AND (o.id IS NULL OR o.executed OR o.dead_lettered_at IS NOT NULL
                    OR o.transition_time <> n.transition_time
                    OR o.next_attempt_at IS DISTINCT FROM n.next_attempt_at)
            UNION ALL
            SELECT o.transition_time
              FROM old_rows o
              JOIN new_rows n ON n.id = o.id
             WHERE NOT o.executed AND NOT n.executed AND n.dead_lettered_at IS NULL
               AND o.transition_time <> n.transition_time
        ) AS changed;
    ELSE
        SELECT min(o.transition_time) INTO earliest
          FROM old_rows o
         WHERE NOT o.executed AND o.dead_lettered_at IS NULL;
    END IF;

    IF earliest IS NOT NULL THEN
        PERFORM pg_notify(
            'game_status_schedule_changed',
            json_build_object('operation', TG_OP, 'earliest_transition_time', earliest)::text
        );
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION scheduled_message_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT min(n.deliver_at) INTO earliest
          FROM new_rows n
         WHERE n.state = 'pending';
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE state = 'pending') THEN
            RETURN NULL;
        END IF;
        SELECT min(n.deliver_at) INTO earliest
          FROM new_rows n
          LEFT JOIN old_rows o ON o.id = n.id
         WHERE n.state = 'pending'
           AND (o.id IS NULL OR o.state <> 'pending' OR o.deliver_at <> n.deliver_at
                OR o.next_attempt_at IS DISTINCT FROM n.next_attempt_at);
    ELSE
        RETURN NULL;
    END IF;

    IF earliest IS NOT NULL THEN
        PERFORM pg_notify(
            'scheduled_message_changed',
            json_build_object('operation', TG_OP, 'earliest_deliver_at', earliest)::text
        );
    END IF;
    RETURN NULL;
END
$$;
