SELECT user_id, window_start, window_end, count(*) AS n, sum(amount) AS total
FROM session('events', 'occurred_at', INTERVAL '10 minutes', 'user_id')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
