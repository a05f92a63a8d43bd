-- Game status transitions, the second kind of scheduled event: a game becomes
-- IN_PROGRESS at its start, COMPLETED after its expected duration, ARCHIVED
-- later. The table, its columns and the notification channel are the
-- application's own names (docs/ARCHITECTURE.md, "Kinds"). A transition never
-- expires: however late, it is delivered.
--
-- game_id has the type of game_sessions.id: uuid here, a string in databases
-- adopted from the original daemon.
DO $$
DECLARE
    game_id_type text;
BEGIN
    SELECT format_type(a.atttypid, a.atttypmod) INTO game_id_type
      FROM pg_attribute a
     WHERE a.attrelid = 'game_sessions'::regclass AND a.attname = 'id';
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS game_status_schedule (
             id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
             game_id         %s          NOT NULL REFERENCES game_sessions (id) ON DELETE CASCADE,
             target_status   text        NOT NULL CHECK (char_length(target_status) BETWEEN 1 AND 20),
             transition_time timestamptz NOT NULL,
             executed        boolean     NOT NULL DEFAULT false,
             created_at      timestamptz NOT NULL DEFAULT now(),
             UNIQUE (game_id, target_status)
         )',
        game_id_type);
END
$$;

-- Adopting a table whose older writers stored naive UTC instants: converting
-- with an explicit UTC zone keeps every instant whatever the session TimeZone.
DO $$
BEGIN
    IF (SELECT data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'game_status_schedule'
           AND column_name = 'transition_time') = 'timestamp without time zone' THEN
        ALTER TABLE game_status_schedule
            ALTER COLUMN transition_time TYPE timestamptz USING transition_time AT TIME ZONE 'UTC';
    END IF;
END
$$;

ALTER TABLE game_status_schedule
    -- When the daemon published the transition.
    ADD COLUMN IF NOT EXISTS executed_at timestamptz NULL,
    -- What the daemon did with the row: 'published'.
    ADD COLUMN IF NOT EXISTS outcome     text        NULL,
    -- The W3C traceparent of the request that scheduled the transition.
    ADD COLUMN IF NOT EXISTS traceparent text        NULL;

-- How long a game is expected to last, in minutes: its COMPLETED transition
-- is due then. NULL means the API's configured default applies.
ALTER TABLE game_sessions
    ADD COLUMN IF NOT EXISTS expected_duration_minutes integer NULL
        CHECK (expected_duration_minutes BETWEEN 1 AND 10080);

CREATE INDEX IF NOT EXISTS game_status_schedule_pending_idx
    ON game_status_schedule (transition_time) WHERE executed = false;
CREATE INDEX IF NOT EXISTS game_status_schedule_game_id_idx
    ON game_status_schedule (game_id);

-- One NOTIFY per statement that adds, moves or removes pending transitions,
-- as for reminders (0003_notify_trigger.sql):
-- {"operation": "INSERT"|"UPDATE"|"DELETE", "earliest_transition_time": <timestamptz>}.
CREATE OR REPLACE FUNCTION game_status_schedule_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT min(n.transition_time) INTO earliest
          FROM new_rows n
         WHERE NOT n.executed;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE NOT executed) THEN
            RETURN NULL;
        END IF;
        SELECT min(t) INTO earliest FROM (
            SELECT n.transition_time AS t
              FROM new_rows n
              LEFT JOIN old_rows o ON o.id = n.id
             WHERE NOT n.executed
               AND (o.id IS NULL OR o.executed OR o.transition_time <> n.transition_time)
            UNION ALL
            SELECT o.transition_time
              FROM old_rows o
              JOIN new_rows n ON n.id = o.id
             WHERE NOT o.executed AND NOT n.executed
               AND o.transition_time <> n.transition_time
        ) AS changed;
    ELSE
        SELECT min(o.transition_time) INTO earliest
          FROM old_rows o
         WHERE NOT o.executed;
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

DROP TRIGGER IF EXISTS game_status_schedule_notify_insert ON game_status_schedule;
CREATE TRIGGER game_status_schedule_notify_insert
    AFTER INSERT ON game_status_schedule
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION game_status_schedule_notify();

DROP TRIGGER IF EXISTS game_status_schedule_notify_update ON game_status_schedule;
CREATE TRIGGER game_status_schedule_notify_update
    AFTER UPDATE ON game_status_schedule
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION game_status_schedule_notify();

DROP TRIGGER IF EXISTS game_status_schedule_notify_delete ON game_status_schedule;
CREATE TRIGGER game_status_schedule_notify_delete
    AFTER DELETE ON game_status_schedule
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION game_status_schedule_notify();
