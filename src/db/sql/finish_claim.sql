-- $1: ids, $2: outcome of each ('published' or 'skipped_stale').
UPDATE notification_schedule AS s
   SET sent = true,
       sent_at = clock_timestamp(),
       outcome = done.outcome
  FROM unnest($1::uuid[], $2::text[]) AS done (id, outcome)
 WHERE s.id = done.id
