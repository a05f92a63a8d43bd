-- Games, minimal: the surrounding application owns this table in an integrated
-- deployment. IF NOT EXISTS lets this project adopt an existing table unchanged.
CREATE TABLE IF NOT EXISTS game_sessions (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    title            text        NOT NULL,
    scheduled_at     timestamptz NOT NULL,
    -- NULL means "use the configured default reminder minutes".
    reminder_minutes integer[]   NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS game_sessions_scheduled_at_idx ON game_sessions (scheduled_at);
