-- The W3C traceparent of the request that scheduled the reminder, so that the
-- delivery span links to it and the published message continues its trace.
ALTER TABLE notification_schedule
    ADD COLUMN IF NOT EXISTS traceparent text NULL;
