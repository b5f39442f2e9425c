-- name: returns_and_recent_spend
-- tasks: churn, next_purchase
-- ttl_days: 62
-- description: days since the last return, share of returned lines and spend over the 60 days before the snapshot
--
-- Copy this file to <workspace>/features.d/ (or point `cxpredict features --features-dir` at its
-- folder). One file is one Feast feature view; its columns join the feature services of the tasks
-- above and are trained on at the next `cxpredict train`.
--
-- Tables are the canonical ones, by name: transactions, events, support_tickets, surveys,
-- marketing, consents, customers. At each snapshot they hold only the facts dated before it
-- ($as_of, a UTC timestamp): never use now() or current_date. Output: customer_id plus numeric
-- columns (integers, decimals, floats, booleans become float64 features; text is refused), at most
-- one row per customer; customers without a row get nulls.
SELECT
  customer_id,
  date_diff('day', max(timestamp) FILTER (WHERE returned), $as_of) AS days_since_last_return,
  avg(CASE WHEN returned THEN 1 ELSE 0 END) AS returned_line_share,
  coalesce(sum(amount) FILTER (WHERE NOT returned AND timestamp >= $as_of - INTERVAL 60 DAY), 0) AS spend_60d
FROM transactions
GROUP BY customer_id
