-- Each running daemon's last report of itself, for the operator console's
-- "daemons seen recently" (docs/console.md). A daemon writes its row every
-- HEARTBEAT_INTERVAL (10 s) from its maintenance pool; rows of daemons gone
-- for a day are deleted by the daemons still running.
CREATE TABLE IF NOT EXISTS scheduler_daemon (
    instance   text        PRIMARY KEY,
    version    text        NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    ready      boolean     NOT NULL,
    -- What is not ready and why: {"database": "...", "broker": "..."}.
    detail     jsonb       NULL
);
