-- Claims the oldest due reminders that no other claim holds and, in the same
-- statement, records what will be done with each: the transaction stays open
-- until the broker has confirmed, so none of this is visible before then, and
-- a rollback (crash, timeout) releases every row unchanged. Marking at claim
-- time saves a second pass over the rows.
--
-- $1: batch size, $2: stale grace in milliseconds.
-- A reminder is stale when its game has started and it is more than the grace
-- late (a 0-minute reminder is due exactly at the start and must still go out).
-- A published message expires when it would become stale.
-- Every time comes from the database clock.
UPDATE notification_schedule AS s
   SET sent = true,
       sent_at = statement_timestamp(),
       outcome = CASE
           WHEN statement_timestamp() > s.game_scheduled_at
            AND statement_timestamp() > s.notification_time + $2::bigint * interval '1 millisecond'
           THEN 'skipped_stale'
           ELSE 'published'
       END
  FROM (SELECT ctid
          FROM notification_schedule
         WHERE NOT sent
           AND notification_time <= statement_timestamp()
         ORDER BY notification_time
         LIMIT $1
           FOR UPDATE SKIP LOCKED) AS due
 WHERE s.ctid = due.ctid
RETURNING s.id,
          s.game_id::text AS game_id,
          s.reminder_minutes,
          s.notification_time,
          s.outcome = 'skipped_stale' AS stale,
          CASE WHEN s.game_scheduled_at IS NOT NULL THEN
              (extract(epoch FROM greatest(s.game_scheduled_at,
                                           s.notification_time + $2::bigint * interval '1 millisecond')
                                  - statement_timestamp()) * 1000)::bigint
          END AS expires_in_ms,
          (extract(epoch FROM statement_timestamp() - s.notification_time) * 1000000)::bigint AS lateness_us,
          s.traceparent
