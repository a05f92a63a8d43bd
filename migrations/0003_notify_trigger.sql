-- Wakes the daemon when the set of pending reminders changes in a way that can
-- move its next deadline. One NOTIFY per statement, never per row: a bulk insert
-- of 100,000 rows queues one notification, and every notifying transaction takes
-- PostgreSQL's notify queue lock at commit.
--
-- Payload: {"operation": "INSERT"|"UPDATE"|"DELETE", "earliest_notification_time": <timestamptz>}
-- where the time is the earliest notification_time of an unsent row the statement
-- added, moved (old and new time) or deleted. Statements that touch no unsent row,
-- such as the daemon marking rows sent, send nothing. Listeners must treat the
-- payload as a hint and re-read the table.
CREATE OR REPLACE FUNCTION notification_schedule_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT min(n.notification_time) INTO earliest
          FROM new_rows n
         WHERE NOT n.sent;
    ELSIF TG_OP = 'UPDATE' THEN
        -- Every case below needs a row that is pending after the update. The
        -- daemon's "mark sent" statements have none: leave before the joins.
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE NOT sent) THEN
            RETURN NULL;
        END IF;
        -- Rows that became pending (moved, or re-armed after being sent) and the
        -- old time of pending rows that moved. A row going from unsent to sent is
        -- the daemon's own bookkeeping and cannot make any deadline earlier.
        SELECT min(t) INTO earliest FROM (
            SELECT n.notification_time AS t
              FROM new_rows n
              LEFT JOIN old_rows o ON o.id = n.id
             WHERE NOT n.sent
               AND (o.id IS NULL OR o.sent OR o.notification_time <> n.notification_time)
            UNION ALL
            SELECT o.notification_time
              FROM old_rows o
              JOIN new_rows n ON n.id = o.id
             WHERE NOT o.sent AND NOT n.sent
               AND o.notification_time <> n.notification_time
        ) AS changed;
    ELSE
        SELECT min(o.notification_time) INTO earliest
          FROM old_rows o
         WHERE NOT o.sent;
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

-- Transition tables allow only one event per trigger, hence three triggers.
DROP TRIGGER IF EXISTS notification_schedule_notify_insert ON notification_schedule;
CREATE TRIGGER notification_schedule_notify_insert
    AFTER INSERT ON notification_schedule
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notification_schedule_notify();

DROP TRIGGER IF EXISTS notification_schedule_notify_update ON notification_schedule;
CREATE TRIGGER notification_schedule_notify_update
    AFTER UPDATE ON notification_schedule
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notification_schedule_notify();

DROP TRIGGER IF EXISTS notification_schedule_notify_delete ON notification_schedule;
CREATE TRIGGER notification_schedule_notify_delete
    AFTER DELETE ON notification_schedule
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notification_schedule_notify();

-- An adopted database still carries the original daemon's row-level trigger,
-- which notified the same channel once per row. Drop any such trigger so that a
-- bulk write queues one notification, not one per row.
DO $$
DECLARE
    legacy record;
BEGIN
    FOR legacy IN
        SELECT t.tgname
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE t.tgrelid = 'notification_schedule'::regclass
           AND NOT t.tgisinternal
           AND p.proname <> 'notification_schedule_notify'
           AND p.prosrc LIKE '%notification_schedule_changed%'
    LOOP
        EXECUTE format('DROP TRIGGER %I ON notification_schedule', legacy.tgname);
    END LOOP;
END
$$;
