SELECT window_start, window_end, count(*) AS n
FROM hop('events', 'occurred_at', INTERVAL '10 minutes', INTERVAL '25 minutes')
GROUP BY 1, 2
ORDER BY 1, 2;
