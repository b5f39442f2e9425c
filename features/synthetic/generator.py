"""``generate``: simulate the world block by block and write raw sources and the truth.

Each block of ``chunk_size`` customers has its own random stream (seed, block number), so the
output is byte-identical for a seed and memory stays bounded by one block.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel

from cxpredict.progress import Progress, silent
from cxpredict.workspace import Workspace
from features.synthetic import rows as build
from features.synthetic.calendar import campaigns, promotions
from features.synthetic.campaign_history import write_campaign_history
from features.synthetic.config import SOURCES, WorldConfig
from features.synthetic.identities import block_ids
from features.synthetic.raw import SCHEMAS, SourceWriters, identifier_only, inject_defects
from features.synthetic.truth import customers_truth, incidents_truth, write_world
from features.synthetic.world import sample_latents, simulate_block


class GenerateSummary(BaseModel):
    """What ``generate`` wrote (counts only: no personal data)."""

    customers: int
    churned: int
    rows: dict[str, int]
    malformed: dict[str, dict[str, int]]
    duplicates: dict[str, int]
    identifier_only: dict[str, int]
    seconds: float
    raw_dir: str
    truth_dir: str
    campaign_history: dict[str, int] | None = None


def generate(ws: Workspace, config: WorldConfig, progress: Progress | None = None) -> GenerateSummary:
    """Write ``<ws>/raw/<source>.parquet`` for every source and the truth into ``<ws>/truth``."""
    started = time.perf_counter()
    ws.ensure()
    promos, camps = promotions(config), campaigns(config)
    width = max(7, len(str(config.customers)))
    progress = progress or silent

    def report(done: int) -> None:
        progress("simulating customers", done, config.customers)

    raw = SourceWriters(ws.raw_dir, SCHEMAS)
    truth = None
    rows = {s: 0 for s in SOURCES}
    duplicates = {s: 0 for s in SOURCES}
    anonymous = {s: 0 for s in SOURCES}
    malformed: dict[str, dict[str, int]] = {s: {} for s in SOURCES}
    churned, orders, sessions = 0, 0, 0
    try:
        for number, first in enumerate(range(0, config.customers, config.chunk_size)):
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, number]))
            n = min(config.chunk_size, config.customers - first)
            lat = sample_latents(config, rng, first, n)
            hist = simulate_block(config, lat, promos, rng)
            dyn = config.dynamics
            ids = block_ids(
                lat.index, width, lat.has_app, rng, dyn.loyalty_card_share, dyn.shared_email_share
            )
            block = build.Block(config, lat, hist, promos, camps, ids, rng)
            purchases_table, purchases = build.transactions(block, orders)
            orders += purchases.customer.size
            events_table, visits, sessions = build.events(block, purchases, sessions)
            marketing_table, consent = build.marketing(block)
            tables = {
                "customers": build.customers(block),
                "transactions": purchases_table,
                "events": events_table,
                "support_tickets": build.support_tickets(block, visits),
                "surveys": build.surveys(block, purchases, visits),
                "marketing": marketing_table,
                "consents": build.consents(block, consent),
            }
            del hist.purchase_counts, hist.session_counts
            for source, clean in tables.items():
                anonymous[source] += identifier_only(source, clean)
                dirty, counts, dups = inject_defects(
                    source, clean, rng, config.malformed_share, config.duplicate_share, block.end
                )
                for kind, count in counts.items():
                    malformed[source][kind] = malformed[source].get(kind, 0) + count
                duplicates[source] += dups
                rows[source] += dirty.num_rows
                raw.write(source, dirty)
            truth_customers = customers_truth(config, lat, hist, ids)
            truth_incidents = incidents_truth(config, hist, ids)
            if truth is None:
                truth = SourceWriters(
                    ws.truth_dir, {"customers": truth_customers.schema, "incidents": truth_incidents.schema}
                )
            truth.write("customers", truth_customers)
            truth.write("incidents", truth_incidents)
            churned += int((hist.churn_day < config.days).sum())
            report(first + n)
    except BaseException:
        raw.abort()
        if truth is not None:
            truth.abort()
        raise
    raw.close()
    assert truth is not None
    truth.close()
    summary = GenerateSummary(
        customers=config.customers,
        churned=churned,
        rows=rows,
        malformed=malformed,
        duplicates=duplicates,
        identifier_only=anonymous,
        seconds=round(time.perf_counter() - started, 3),
        raw_dir=str(ws.raw_dir),
        truth_dir=str(ws.truth_dir),
    )
    facts = {
        "rows": rows,
        "malformed": malformed,
        "duplicates": duplicates,
        "identifier_only": anonymous,
        "churned": churned,
    }
    write_world(ws.truth_dir, config, promos, facts)
    if config.campaign_history is not None:
        progress("writing the campaign history", 0, 1)
        history = write_campaign_history(ws, config)
        rows["transactions"] = history.transactions
        summary.campaign_history = history.as_dict()
        write_world(ws.truth_dir, config, promos, {**facts, "campaign_history": history.as_dict()})
        summary.seconds = round(time.perf_counter() - started, 3)
    return summary
