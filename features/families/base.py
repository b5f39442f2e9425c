"""Shared staging: the known-customer table and compact, customer-keyed copies of the big sources.

Raw canonical rows carry string ids and labels; every family would otherwise hash those strings
again. Staging reads each big source once and keeps integer keys and small codes:
- ``customers_known(customer_key, customer_id, known_us)``: every customer and when first seen
  (earliest fact in any source, or signup);
- ``stg_orders``: transactions grouped into purchase occasions (customer, timestamp, order_id; order
  lines share their timestamp): purchase ``lines`` (0 for a group of returns only), ``amount``, ``qty``,
  discount sums, ``returns``, and purchase lines per channel (``ch_<channel>``) and per top category
  (``cat_<index>``), and ``prev_ts``: the time of the customer's previous purchase occasion (null
  for a group of returns only and for the first occasion), so the second-latest purchase before any
  cutoff is ``max(prev_ts)``. A *return* is a row with ``returned`` true or a negative amount.
  Sorted by key;
- ``stg_ev``: events with ``et`` (code of ``EVENT_CODES``), ``sess`` (hash of session_id), ``app``
  and ``cat``.
"""

from __future__ import annotations

from features.families import SOURCE_TIME_COLUMN, FamilyContext, sql_str

EVENT_CODES = {
    "session_start": 0,
    "page_view": 1,
    "search": 2,
    "product_view": 3,
    "add_to_cart": 4,
    "remove_from_cart": 5,
    "wishlist_add": 6,
    "checkout_start": 7,
    "checkout_complete": 8,
    "app_open": 9,
    "login": 10,
}
CHANNEL_CODES = {"online": 0, "store": 1, "app": 2}


def category_code(ctx: FamilyContext) -> str:
    """SQL mapping ``category`` to its index among the build's top categories (null if not among them)."""
    if not ctx.categories:
        return "NULL::UTINYINT"
    whens = " ".join(f"WHEN {sql_str(c)} THEN {i}" for i, c in enumerate(ctx.categories))
    return f"(CASE category {whens} END)::UTINYINT"


def _code(column: str, codes: dict[str, int]) -> str:
    whens = " ".join(f"WHEN '{name}' THEN {code}" for name, code in codes.items())
    return f"(CASE {column} {whens} END)::UTINYINT"


def known_customers_sql(ctx: FamilyContext) -> str:
    parts = [
        f"SELECT customer_id, min(epoch_us({col})) AS t FROM raw_{source} "
        f"WHERE customer_id IS NOT NULL AND {col} IS NOT NULL GROUP BY customer_id"
        for source, col in SOURCE_TIME_COLUMN.items()
        if ctx.present(source)
    ]
    union = "\nUNION ALL\n".join(parts)
    return (
        "CREATE TABLE customers_known AS\n"
        "SELECT (row_number() OVER (ORDER BY customer_id))::INTEGER AS customer_key, customer_id, known_us FROM (\n"
        f"SELECT customer_id, min(t) AS known_us FROM (\n{union}\n) GROUP BY customer_id)"
    )


def base_stage_sql(ctx: FamilyContext) -> list[str]:
    """Statements creating ``customers_known`` and the compact tables of the present sources."""
    statements = [known_customers_sql(ctx)]
    if ctx.present("transactions"):
        statements.append(_orders_sql(ctx))
    if ctx.present("events"):
        statements.append(
            "CREATE TABLE stg_ev AS SELECT k.customer_key, epoch_us(timestamp) AS ts, "
            f"{_code('event_type', EVENT_CODES)} AS et, "
            "CASE WHEN session_id IS NOT NULL THEN hash(session_id) END AS sess, channel = 'app' AS app, "
            f"{category_code(ctx)} AS cat "
            "FROM raw_events JOIN customers_known k USING (customer_id) WHERE timestamp IS NOT NULL"
        )
    return statements


def order_columns(ctx: FamilyContext) -> list[str]:
    """The per-occasion columns of ``stg_orders`` besides ``customer_key`` and ``prev_ts``, named
    one by one (not ``* EXCLUDE``) so the statement reads the same in every SQL engine."""
    return [
        "ts",
        "lines",
        "amount",
        "qty",
        "disc_lines",
        "disc_sum",
        "disc_n",
        "returns",
        *(f"ch_{c}" for c in CHANNEL_CODES),
        *(f"cat_{i}" for i in range(len(ctx.categories))),
    ]


def _orders_sql(ctx: FamilyContext) -> str:
    channels = "".join(
        f",\n  {masked_count(f'NOT is_return AND ch = {code}')} AS ch_{c}"
        for c, code in CHANNEL_CODES.items()
    )
    cats = "".join(
        f",\n  {masked_count(f'NOT is_return AND cat = {i}')} AS cat_{i}" for i in range(len(ctx.categories))
    )
    return f"""
CREATE TABLE stg_orders AS
WITH lines AS (
  SELECT customer_id, epoch_us(timestamp) AS ts, order_id, amount, quantity::DOUBLE AS qty, discount,
    {_code("channel", CHANNEL_CODES)} AS ch, {category_code(ctx)} AS cat,
    (amount < 0 OR coalesce(returned, false)) AS is_return
  FROM raw_transactions WHERE customer_id IS NOT NULL AND timestamp IS NOT NULL AND amount IS NOT NULL
), orders AS (
  SELECT customer_id, ts,
  {masked_count("NOT is_return")} AS lines,
  coalesce({masked_sum("amount", "NOT is_return")}, 0) AS amount,
  {masked_sum("qty", "NOT is_return")} AS qty,
  {masked_count("NOT is_return AND discount > 0")} AS disc_lines,
  {masked_sum("discount", "NOT is_return")} AS disc_sum,
  {masked_count("NOT is_return AND discount IS NOT NULL")} AS disc_n,
  {masked_count("is_return")} AS returns{channels}{cats}
  FROM lines GROUP BY customer_id, ts, order_id
)
SELECT k.customer_key, {", ".join(f"orders.{c}" for c in order_columns(ctx))},
  CASE WHEN lines > 0 THEN lag(ts) OVER (PARTITION BY k.customer_key, lines > 0 ORDER BY ts) END AS prev_ts
FROM orders JOIN customers_known k USING (customer_id)
ORDER BY k.customer_key
"""


def masked_sum(value: str, condition: str) -> str:
    """``sum(value)`` over rows meeting ``condition`` (0 when none): arithmetic masking is several
    times faster in DuckDB than ``FILTER`` with many aggregates."""
    return f"sum(({value}) * ({condition})::DOUBLE)"


def masked_count(condition: str) -> str:
    return f"sum(({condition})::DOUBLE)"
