-- a session starts at a time with no earlier row of the same key within the gap;
-- each row belongs to the latest session start at or before it
WITH starts AS (
    SELECT DISTINCT e.user_id, e.occurred_at AS session_start
    FROM events e
    WHERE NOT EXISTS (
        SELECT 1 FROM events p
        WHERE p.user_id = e.user_id
          AND p.occurred_at < e.occurred_at
          AND p.occurred_at >= e.occurred_at - INTERVAL '10 minutes')
), tagged AS (
    SELECT e.*,
           (SELECT max(s.session_start) FROM starts s
            WHERE s.user_id = e.user_id AND s.session_start <= e.occurred_at) AS session_start
    FROM events e
)
SELECT user_id,
       min(occurred_at) AS window_start,
       max(occurred_at) + INTERVAL '10 minutes' AS window_end,
       count(*) AS n,
       sum(amount) AS total
FROM tagged
GROUP BY user_id, session_start
ORDER BY 1, 2, 3;
