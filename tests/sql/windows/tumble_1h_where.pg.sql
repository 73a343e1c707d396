SELECT date_bin(INTERVAL '1 hour', occurred_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS window_start,
       date_bin(INTERVAL '1 hour', occurred_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') + INTERVAL '1 hour' AS window_end,
       count(*) AS n,
       min(occurred_at) AS first_at,
       max(amount) AS max_amount
FROM events
WHERE user_id <= 6
GROUP BY 1, 2
ORDER BY 1, 2;
