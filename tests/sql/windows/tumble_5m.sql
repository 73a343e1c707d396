SELECT window_start, window_end, kind, count(*) AS n, sum(amount) AS total
FROM tumble('events', 'occurred_at', INTERVAL '5 minutes')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
