-- $1: batch size, $2: stale grace in milliseconds.
-- A reminder is stale when its game has started and it is more than the grace
-- late (a 0-minute reminder is due exactly at the start and must still go out).
-- It expires when it would become stale.
SELECT id,
       game_id::text AS game_id,
       reminder_minutes,
       notification_time,
       coalesce(statement_timestamp() > game_scheduled_at
                AND statement_timestamp() > notification_time + $2::bigint * interval '1 millisecond',
                false) AS stale,
       CASE WHEN game_scheduled_at IS NOT NULL THEN
           (extract(epoch FROM greatest(game_scheduled_at, notification_time + $2::bigint * interval '1 millisecond')
                               - statement_timestamp()) * 1000)::bigint
       END AS expires_in_ms,
       (extract(epoch FROM statement_timestamp() - notification_time) * 1000000)::bigint AS lateness_us
  FROM notification_schedule
 WHERE NOT sent
   AND notification_time <= statement_timestamp()
 ORDER BY notification_time
 LIMIT $1
   FOR UPDATE SKIP LOCKED
