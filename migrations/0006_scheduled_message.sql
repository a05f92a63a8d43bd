-- Scheduled messages, the third kind of scheduled event: any RabbitMQ message
-- an application wants published at `deliver_at`. Applications write rows
-- directly or through the HTTP API (`/messages`); the daemon publishes the
-- payload unchanged (docs/scheduled-messages.md).
CREATE TABLE IF NOT EXISTS scheduled_message (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The caller's own name for the message: a POST with the same key is an
    -- idempotent retry.
    key         text        NULL UNIQUE CHECK (char_length(key) BETWEEN 1 AND 200),
    -- NULL: the daemon's configured exchange.
    exchange    text        NULL CHECK (octet_length(exchange) <= 255),
    -- AMQP short strings: at most 255 bytes.
    routing_key text        NOT NULL CHECK (octet_length(routing_key) <= 255),
    -- The message body, kept as written (json, not jsonb), so it is
    -- published byte for byte.
    payload     json        NOT NULL,
    -- AMQP headers: an object of string, number and boolean values.
    headers     jsonb       NULL CHECK (headers IS NULL OR jsonb_typeof(headers) = 'object'),
    deliver_at  timestamptz NOT NULL,
    -- Not published once this has passed; the message's AMQP expiration is
    -- the time left until then.
    expires_at  timestamptz NULL,
    -- pending: waiting for deliver_at; sent: published and confirmed;
    -- expired: came due after expires_at, not published; cancelled;
    -- dead_lettered: refused by the broker on every attempt, kept until
    -- retried or discarded (0007_delivery_attempts.sql).
    state       text        NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'sent', 'expired', 'cancelled', 'dead_lettered')),
    -- Publishes the broker answered: confirmed, returned or refused.
    attempts    integer     NOT NULL DEFAULT 0,
    -- When the daemon dealt with it (published or found it expired), or when
    -- it was cancelled.
    sent_at     timestamptz NULL,
    -- What the daemon did: 'published', 'expired'; 'cancelled' by the API.
    outcome     text        NULL,
    -- The W3C traceparent of the request that scheduled the message.
    traceparent text        NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS scheduled_message_pending_idx
    ON scheduled_message (deliver_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS scheduled_message_list_idx
    ON scheduled_message (created_at, id);

-- One NOTIFY per statement that adds, moves or re-arms pending messages, as for
-- reminders (0003_notify_trigger.sql):
-- {"operation": "INSERT"|"UPDATE"|"DELETE", "earliest_deliver_at": <timestamptz>}.
-- A message leaving the pending state (sent, expired, cancelled, deleted)
-- cannot make any deadline earlier; a daemon that wakes for it finds nothing
-- and re-reads the table.
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
           AND (o.id IS NULL OR o.state <> 'pending' OR o.deliver_at <> n.deliver_at);
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

DROP TRIGGER IF EXISTS scheduled_message_notify_insert ON scheduled_message;
CREATE TRIGGER scheduled_message_notify_insert
    AFTER INSERT ON scheduled_message
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scheduled_message_notify();

DROP TRIGGER IF EXISTS scheduled_message_notify_update ON scheduled_message;
CREATE TRIGGER scheduled_message_notify_update
    AFTER UPDATE ON scheduled_message
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION scheduled_message_notify();
