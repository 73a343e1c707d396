SELECT user_id, kind, window_start, window_end, count(*) AS n
FROM session('events', 'occurred_at', INTERVAL '10 minutes', 'user_id', 'kind')
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;
