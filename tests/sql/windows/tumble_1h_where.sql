SELECT window_start, window_end, count(*) AS n, min(occurred_at) AS first_at, max(amount) AS max_amount
FROM tumble('events', 'occurred_at', INTERVAL '1 hour')
WHERE user_id <= 6
GROUP BY 1, 2
ORDER BY 1, 2;
