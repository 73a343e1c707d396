-- every window [s, s + 15 min) with s a multiple of 5 minutes since the epoch, joined to
-- the rows it contains (windows without rows do not appear)
WITH bounds AS (
    SELECT min(occurred_at) AS lo, max(occurred_at) AS hi FROM events
), windows AS (
    SELECT s AS window_start, s + INTERVAL '15 minutes' AS window_end
    FROM bounds,
         generate_series(date_bin(INTERVAL '5 minutes', lo, TIMESTAMPTZ '1970-01-01 00:00:00+00') - INTERVAL '15 minutes',
                         hi, INTERVAL '5 minutes') AS s
)
SELECT w.window_start, w.window_end, count(*) AS n, sum(e.amount) AS total
FROM windows w
JOIN events e ON e.occurred_at >= w.window_start AND e.occurred_at < w.window_end
GROUP BY 1, 2
ORDER BY 1, 2;
