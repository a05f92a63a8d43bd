-- $1: ids of rows this daemon is delivering right now.
-- The delay is computed here so that the timer runs on the database clock.
SELECT notification_time,
       greatest(0, extract(epoch FROM notification_time - clock_timestamp()) * 1000000)::bigint AS delay_us
  FROM notification_schedule
 WHERE NOT sent
   AND NOT (id = ANY ($1::uuid[]))
 ORDER BY notification_time
 LIMIT 1
