-- One row per reminder to send. The column names and types are the contract
-- shared with existing writers (see docs/ARCHITECTURE.md, "Schema").
CREATE TABLE IF NOT EXISTS notification_schedule (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    game_id           uuid        NOT NULL REFERENCES game_sessions (id) ON DELETE CASCADE,
    reminder_minutes  integer     NOT NULL,
    notification_time timestamptz NOT NULL,
    sent              boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Adopting a table created by the original Python daemon: it stored naive UTC
-- timestamps. Converting with an explicit UTC zone keeps every instant unchanged
-- whatever the session TimeZone is.
DO $$
BEGIN
    IF (SELECT data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'notification_schedule'
           AND column_name = 'notification_time') = 'timestamp without time zone' THEN
        ALTER TABLE notification_schedule
            ALTER COLUMN notification_time TYPE timestamptz USING notification_time AT TIME ZONE 'UTC';
    END IF;
    IF (SELECT data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'notification_schedule'
           AND column_name = 'created_at') = 'timestamp without time zone' THEN
        ALTER TABLE notification_schedule
            ALTER COLUMN created_at TYPE timestamptz USING created_at AT TIME ZONE 'UTC';
    END IF;
END
$$;

ALTER TABLE notification_schedule
    -- When the row was published or skipped; NULL for rows marked by older daemons.
    ADD COLUMN IF NOT EXISTS sent_at           timestamptz NULL,
    -- The game's start. NULL for rows from older writers: such rows are never
    -- skipped as stale and are published without an expiration.
    ADD COLUMN IF NOT EXISTS game_scheduled_at timestamptz NULL,
    -- What the daemon did with the row: 'published' or 'skipped_stale'.
    ADD COLUMN IF NOT EXISTS outcome           text        NULL;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'notification_schedule'::regclass
                      AND conname = 'notification_schedule_reminder_minutes_check') THEN
        ALTER TABLE notification_schedule
            ADD CONSTRAINT notification_schedule_reminder_minutes_check CHECK (reminder_minutes >= 0);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'notification_schedule'::regclass
                      AND conname = 'notification_schedule_outcome_check') THEN
        ALTER TABLE notification_schedule
            ADD CONSTRAINT notification_schedule_outcome_check
            CHECK (outcome IN ('published', 'skipped_stale'));
    END IF;
    -- An adopted table may already carry the unique constraint under another name.
    IF NOT EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = 'notification_schedule'::regclass
                      AND i.indisunique AND i.indnkeyatts = 2
                      AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                                          WHERE attrelid = i.indrelid AND attname = 'game_id')
                      AND i.indkey[1] = (SELECT attnum FROM pg_attribute
                                          WHERE attrelid = i.indrelid AND attname = 'reminder_minutes')) THEN
        ALTER TABLE notification_schedule
            ADD CONSTRAINT notification_schedule_game_id_reminder_minutes_key UNIQUE (game_id, reminder_minutes);
    END IF;
END
$$;

-- The "next due" and claim queries read only unsent rows, in time order.
CREATE INDEX IF NOT EXISTS notification_schedule_due_idx
    ON notification_schedule (notification_time) WHERE NOT sent;

-- Per-game lookups (schedule updates, ON DELETE CASCADE from game_sessions)
-- use the unique (game_id, reminder_minutes) index, whose leading column is
-- game_id. A separate game_id index would duplicate it and cost about a sixth
-- of the write work of every delivered reminder (each one updates every index).
