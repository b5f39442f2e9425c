"""A real transactions-only dataset that ships inside an installed package, for quality tests offline.

CDNOW master dataset (Fader & Hardie): the complete purchase history, from 1997-01-01 to 1998-06-30,
of the 23,570 customers who made their first-ever purchase at the online music retailer CDNOW in the
first quarter of 1997 -- 69,659 transactions, one line per transaction with the customer, the day
(no time of day), the number of CDs and the dollar value. It is the reference dataset of the BG/NBD
and Pareto/NBD literature (Fader, Hardie & Lee 2005 fit a 1/10 sample of it over a 39-week calibration
period, 1997-01-01 to 1997-09-30, and a 39-week holdout).

The file is ``lifetimes/datasets/CDNOW_master.txt`` of the PyPI package ``lifetimes`` (0.11.3, 1.9 MB
of its 2.8 MB wheel). That package is licensed MIT ("Copyright (c) 2015, Cameron Davidson-Pilon") and
states no separate licence for the data files it ships; the data originate from Bruce Hardie's
public CDNOW datasets. The package is located without importing it (its ``__init__`` pulls in its
fitters, which this project does not use), so loading needs no network and no lifetimes code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

PACKAGE = "lifetimes"
TRANSACTIONS_FILE = "CDNOW_master.txt"
CALIBRATION_CUTOFF = pd.Timestamp("1997-10-01", tz="UTC")
"""End (exclusive) of the classic 39-week calibration period."""
END = pd.Timestamp("1998-07-01", tz="UTC")
"""End (exclusive) of the data: the 39-week holdout is [CALIBRATION_CUTOFF, END)."""


def package_file(name: str) -> Path:
    """Path of a file in the ``datasets`` folder of the installed ``lifetimes`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {PACKAGE!r} package (which ships the CDNOW data) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {PACKAGE!r} package")
    return path


def load_transactions() -> pd.DataFrame:
    """The CDNOW master transactions: ``customer_id`` (str, zero-padded as in the file), ``timestamp``
    (midnight UTC of the purchase day) and ``amount`` (dollars, float; 80 lines are 0), sorted by
    customer then day. Same-day lines are kept as separate transactions."""
    raw = pd.read_csv(
        package_file(TRANSACTIONS_FILE),
        sep=r"\s+",
        header=0,
        names=["customer_id", "date", "quantity", "amount"],
        dtype={"customer_id": str, "date": str, "quantity": "int64", "amount": "float64"},
    )
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"].astype(str),
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d", utc=True),
            "amount": raw["amount"].astype("float64"),
        }
    )
