SELECT date_bin(INTERVAL '5 minutes', occurred_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS window_start,
       date_bin(INTERVAL '5 minutes', occurred_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') + INTERVAL '5 minutes' AS window_end,
       kind,
       count(*) AS n,
       sum(amount) AS total
FROM events
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
