"""Identifiers of synthetic customers: ids, emails, phones, loyalty cards and devices.

All are built from the customer number by bijective scrambles, so they are unique without any
lookup; a few customers get another customer's email on purpose (a family inbox) so identity
stitching meets an ambiguous identifier. Domains are the reserved ``example`` ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FIRST_NAMES = (
    "anna",
    "ben",
    "chloe",
    "david",
    "emma",
    "felix",
    "grace",
    "harry",
    "isla",
    "jack",
    "kate",
    "liam",
    "mia",
    "noah",
    "olivia",
    "paul",
    "quinn",
    "rosa",
    "sam",
    "tara",
    "umar",
    "vera",
    "will",
    "zoe",
)
LAST_NAMES = (
    "adams",
    "brown",
    "clark",
    "davis",
    "evans",
    "fisher",
    "green",
    "hall",
    "irving",
    "jones",
    "king",
    "lewis",
    "moore",
    "nash",
    "owen",
    "price",
    "quinn",
    "reed",
    "smith",
    "turner",
    "underwood",
    "vaughan",
    "walker",
    "young",
)
DOMAINS = ("example.com", "example.org", "example.net", "mail.example")


def _scramble(index: np.ndarray, multiplier: int, offset: int, modulus: int) -> np.ndarray:
    """A bijection of 0..modulus-1 (the multiplier is coprime with the modulus)."""
    return (index.astype(np.int64) * multiplier + offset) % modulus  # no overflow below 10**8 customers


def _digits(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pa.array(values.astype(np.int64)).cast(pa.string()), width=width, padding="0")


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def customer_ids(index: np.ndarray, width: int) -> pa.Array:
    """``C`` + the 1-based customer number, zero-padded."""
    return _join("C", _digits(index + 1, width))


@dataclass(frozen=True)
class BlockIds:
    """Per-customer identifiers of one block (Arrow string arrays, null where absent)."""

    customer_id: pa.Array
    email: pa.Array
    phone: pa.Array
    loyalty_card: pa.Array
    web_device: pa.Array
    app_device: pa.Array
    shared_email: np.ndarray  # bool: this customer's email is another customer's too


def block_ids(
    index: np.ndarray,
    width: int,
    has_app: np.ndarray,
    rng: np.random.Generator,
    loyalty_share: float,
    shared_email_share: float,
) -> BlockIds:
    n = index.size
    token = _scramble(index, 2_654_435_761, 12_345, 10**9)
    first = pa.array(FIRST_NAMES).take(pa.array(token % len(FIRST_NAMES)))
    last = pa.array(LAST_NAMES).take(pa.array((token // len(FIRST_NAMES)) % len(LAST_NAMES)))
    domain = pa.array(DOMAINS).take(pa.array(rng.integers(0, len(DOMAINS), n)))
    email = _join(first, ".", last, _digits(token, 9), "@", domain)
    shared = np.zeros(n, dtype=bool)
    owner = np.arange(n)
    pairs = min(rng.binomial(n, shared_email_share), n // 2)
    if pairs:
        order = rng.permutation(n)
        receivers, donors = order[:pairs], order[pairs : 2 * pairs]
        owner[receivers] = donors
        shared[receivers] = shared[donors] = True
    has_card = pa.array(rng.random(n) < loyalty_share)
    null = pa.scalar(None, pa.string())
    return BlockIds(
        customer_id=customer_ids(index, width),
        email=email.take(pa.array(owner)),
        phone=_join("+447", _digits(_scramble(index, 387_420_489, 777, 10**9), 9)),
        loyalty_card=pc.if_else(
            has_card, _join("LC", _digits(_scramble(index, 2_246_822_519, 99, 10**10), 10)), null
        ),
        web_device=_join("dev-", _digits(_scramble(2 * index, 3_266_489_917, 5, 10**12), 12)),
        app_device=pc.if_else(
            pa.array(has_app),
            _join("dev-", _digits(_scramble(2 * index + 1, 3_266_489_917, 5, 10**12), 12)),
            null,
        ),
        shared_email=shared,
    )
