SELECT window_start, window_end, count(*) AS n, sum(amount) AS total
FROM hop('events', 'occurred_at', INTERVAL '5 minutes', INTERVAL '15 minutes')
GROUP BY 1, 2
ORDER BY 1, 2;
