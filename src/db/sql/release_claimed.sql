-- Returns claimed reminders the broker did not confirm to pending, inside the
-- claim's transaction, so that they are delivered again.
-- $1: ids.
UPDATE notification_schedule
   SET sent = false,
       sent_at = NULL,
       outcome = NULL
 WHERE id = ANY ($1::uuid[])
