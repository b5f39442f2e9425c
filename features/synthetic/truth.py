"""The ground truth of a generated world: read by evaluation and the oracle, never by features.

``<ws>/truth/customers.parquet``: one row per customer with every latent parameter, the true
identifiers, sign-up, decline-onset and churn times (null when not in the window).
``<ws>/truth/incidents.parquet``: service incidents before churn (day, bad or not), the only
random history the churn hazard depends on. ``<ws>/truth/world.json``: the configuration, the
promotion calendar and the counts of injected defects per source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from cxpredict.workspace import Workspace
from features.synthetic.calendar import Promotion
from features.synthetic.config import WorldConfig
from features.synthetic.identities import BlockIds
from features.synthetic.rows import DAY
from features.synthetic.world import ACQUISITION_CHANNELS, BlockHistory, Latents

TRUTH_FORMAT = 1
UTC_SECONDS = pa.timestamp("s", tz="UTC")


def _stamps(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    array = pa.array(np.asarray(seconds, dtype=np.int64), mask=None if valid is None else ~valid)
    return array.cast(UTC_SECONDS)


def customers_truth(config: WorldConfig, lat: Latents, hist: BlockHistory, ids: BlockIds) -> pa.Table:
    """Latents and life events of one block, plus the identifiers rows may be keyed by."""
    day0 = config.start_epoch_day * DAY
    frame = lat.to_frame()
    frame.insert(0, "customer_id", ids.customer_id.to_numpy(zero_copy_only=False))
    frame["acquisition_channel"] = np.asarray(ACQUISITION_CHANNELS)[lat.acquisition]
    frame["unmet_need_count"] = lat.unmet_count
    frame["total_purchase_rate"] = lat.total_purchase_rate(config.dynamics)
    frame["decline_day"] = np.where(hist.decline_day < config.days, hist.decline_day, -1)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    declined = hist.decline_day < config.days
    churned = hist.churn_day < config.days
    extra = {
        "signup_at": _stamps(day0 + lat.signup_day * DAY + lat.signup_second),
        "decline_start_at": _stamps(day0 + np.where(declined, hist.decline_day, 0) * DAY, declined),
        "churn_at": _stamps(day0 + np.where(churned, hist.churn_day, 0) * DAY, churned),
        "email": ids.email,
        "phone": ids.phone,
        "loyalty_card": ids.loyalty_card,
        "web_device_id": ids.web_device,
        "app_device_id": ids.app_device,
        "shared_email": pa.array(ids.shared_email),
    }
    for name, values in extra.items():
        table = table.append_column(name, values)
    return table


def incidents_truth(config: WorldConfig, hist: BlockHistory, ids: BlockIds) -> pa.Table:
    """Incidents that happened while the customer was still a customer."""
    live = hist.incident_day < hist.churn_day[hist.incident_customer]
    customer, day = hist.incident_customer[live], hist.incident_day[live]
    return pa.table(
        {
            "customer_id": ids.customer_id.take(pa.array(customer)),
            "day": pa.array(day, pa.int64()),
            "day_at": _stamps((config.start_epoch_day + day) * DAY),
            "bad": pa.array(hist.incident_bad[live]),
        }
    )


def write_world(folder: Path, config: WorldConfig, promos: list[Promotion], facts: dict[str, Any]) -> Path:
    """``world.json``: configuration, calendar and whatever the generator counted."""
    document = {
        "format": TRUTH_FORMAT,
        "config": config.model_dump(mode="json"),
        "window": {"start": config.start_at.isoformat(), "end": config.end_at.isoformat()},
        "promotions": [vars(p) for p in promos],
        **facts,
    }
    path = folder / "world.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=True))
    return path


@dataclass
class Truth:
    """A loaded ground truth."""

    config: WorldConfig
    customers: pd.DataFrame
    incidents: pd.DataFrame
    world: dict[str, Any]

    def latents(self) -> Latents:
        return Latents.from_frame(self.customers)


def truth_folder(where: Workspace | Path | str) -> Path:
    return where.truth_dir if isinstance(where, Workspace) else Path(where)


def load_truth(where: Workspace | Path | str) -> Truth:
    """Read ``<ws>/truth`` (or a truth folder given directly)."""
    folder = truth_folder(where)
    world = json.loads((folder / "world.json").read_text())
    if world.get("format") != TRUTH_FORMAT:
        raise ValueError(f"unsupported truth format {world.get('format')!r} in {folder}")
    return Truth(
        config=WorldConfig.model_validate(world["config"]),
        customers=pd.read_parquet(folder / "customers.parquet"),
        incidents=pd.read_parquet(folder / "incidents.parquet"),
        world=world,
    )
