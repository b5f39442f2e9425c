"""Identity stitching: link rows that carry an email, phone, loyalty card or device id to one customer.

Why: sources often know a customer by another identifier. Links must be deterministic and never
wrong, so only normalised exact matches count, and an identifier that reaches two customers is
never used.

Model: identifiers are graph nodes keyed by (kind, keyed hash of the normalised value); raw values
are never stored. Evidence is of two sorts, both persisted so later batches build on it:
*attachments* (identifier ↔ customer_id: from the customers table and from rows carrying both) and
*pairs* (identifier ↔ identifier, from rows carrying two but no customer_id). Connected components
over the pairs (scipy) make links transitive; a component's customers are the union of its attachments. A
component with one customer resolves every identifier in it; with two or more, all its identifiers
are ambiguous (reported, never used, customers never merged); with none, unresolved.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.contract import IDENTIFIER_KINDS, SOURCES, STRING_DTYPE, ParsedSource, reason

KEY_LENGTH = 16
NODE = ["identifier_kind", "identifier_hash"]
ATTACHMENT_SCHEMA = pa.schema([("identifier_kind", pa.string()), ("identifier_hash", pa.string()),
                               ("customer_id", pa.string()), ("learned_from", pa.string())])  # fmt: skip
PAIR_SCHEMA = pa.schema([("kind_a", pa.string()), ("hash_a", pa.string()), ("kind_b", pa.string()),
                         ("hash_b", pa.string()), ("learned_from", pa.string())])  # fmt: skip
LINK_SCHEMA = pa.schema([("identifier_kind", pa.string()), ("identifier_hash", pa.string()),
                         ("customer_id", pa.string()), ("learned_from", pa.string()),
                         ("via", pa.string())])  # fmt: skip
AMBIGUOUS_SCHEMA = pa.schema([("identifier_kind", pa.string()), ("identifier_hash", pa.string()),
                              ("n_customers", pa.int64())])  # fmt: skip


def new_key() -> str:
    """A random per-workspace key for the identifier hash (16 characters, as pandas' SipHash needs)."""
    return secrets.token_hex(KEY_LENGTH // 2)


def hex_digest(values: np.ndarray) -> np.ndarray:
    """64-bit hashes as 16-character hex strings, without a Python loop."""
    raw = np.ascontiguousarray(values.astype(">u8")).tobytes().hex().encode()
    return np.frombuffer(raw, dtype=f"S{KEY_LENGTH}").astype(str) if len(values) else np.array([], dtype=str)


def hash_values(values: pd.Series, key: str) -> pd.Series:
    """Keyed SipHash of each non-null value as hex (null stays null); the raw value is not recoverable
    without the workspace key."""
    present = values.dropna()
    digests = hex_digest(pd.util.hash_pandas_object(present, index=False, hash_key=key).to_numpy())
    return pd.Series(digests, index=present.index, dtype=STRING_DTYPE).reindex(values.index)


def hash_identifiers(identifiers: pd.DataFrame, key: str) -> pd.DataFrame:
    return pd.DataFrame({kind: hash_values(identifiers[kind], key) for kind in IDENTIFIER_KINDS},
                        index=identifiers.index)  # fmt: skip


@dataclass(frozen=True)
class Evidence:
    """What stitching has learned: identifier ↔ customer attachments and identifier ↔ identifier pairs."""

    attachments: pd.DataFrame
    pairs: pd.DataFrame

    @staticmethod
    def empty() -> Evidence:
        return Evidence(ATTACHMENT_SCHEMA.empty_table().to_pandas(types_mapper=lambda t: STRING_DTYPE),
                        PAIR_SCHEMA.empty_table().to_pandas(types_mapper=lambda t: STRING_DTYPE))  # fmt: skip

    def combine(self, other: Evidence) -> Evidence:
        return Evidence(_union(self.attachments, other.attachments), _union(self.pairs, other.pairs))


def evidence_from_rows(source: str, customer_id: pd.Series, hashed: pd.DataFrame) -> Evidence:
    """Attachments from rows with a customer_id and an identifier; pairs from rows with two identifiers
    and no customer_id.

    A row that names its customer attaches each identifier to that customer directly; pairing its
    identifiers as well would only let one shared identifier spread ambiguity to all of that
    customer's other identifiers.
    """
    attachments = [
        pd.DataFrame({"identifier_kind": kind, "identifier_hash": hashed.loc[mask, kind],
                      "customer_id": customer_id[mask], "learned_from": source})
        for kind in IDENTIFIER_KINDS
        if (mask := customer_id.notna() & hashed[kind].notna()).any()
    ]  # fmt: skip
    pairs = [
        pd.DataFrame({"kind_a": a, "hash_a": hashed.loc[mask, a], "kind_b": b,
                      "hash_b": hashed.loc[mask, b], "learned_from": source})
        for a, b in combinations(IDENTIFIER_KINDS, 2)
        if (mask := customer_id.isna() & hashed[a].notna() & hashed[b].notna()).any()
    ]  # fmt: skip
    empty = Evidence.empty()
    return Evidence(_union(empty.attachments, *attachments), _union(empty.pairs, *pairs))


def _union(*frames: pd.DataFrame) -> pd.DataFrame:
    """Distinct rows of the frames, all columns as strings."""
    return pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True).astype(STRING_DTYPE)


@dataclass(frozen=True)
class IdentityGraph:
    """Every known identifier with its component's outcome: the customer, or how many customers."""

    nodes: pd.DataFrame  # identifier_kind, identifier_hash, n_customers, customer_id, learned_from, via

    def lookup(self, hashed: pd.DataFrame) -> pd.DataFrame:
        """Per row: the identifier kind used, the status (resolved/ambiguous/unresolved) and the customer.

        A row's identifiers are all in one component (the row itself pairs them), so its first
        identifier in ``IDENTIFIER_KINDS`` order decides.
        """
        kind = pd.Series(pd.NA, index=hashed.index, dtype=STRING_DTYPE)
        value = pd.Series(pd.NA, index=hashed.index, dtype=STRING_DTYPE)
        for name in reversed(IDENTIFIER_KINDS):
            present = hashed[name].notna()
            kind = kind.mask(present, name)
            value = value.mask(present, hashed[name])
        position = pd.MultiIndex.from_frame(self.nodes[NODE]).get_indexer(
            pd.MultiIndex.from_arrays([kind.fillna(""), value.fillna("")]))  # fmt: skip
        found = position >= 0
        n_customers = np.zeros(len(hashed), dtype=np.int64)
        n_customers[found] = self.nodes["n_customers"].to_numpy()[position[found]]
        customer = pd.Series(pd.NA, index=hashed.index, dtype=STRING_DTYPE)
        customer[found] = self.nodes["customer_id"].to_numpy()[position[found]]
        status = np.select([kind.isna().to_numpy(), n_customers == 1, n_customers >= 2],
                           ["missing", "resolved", "ambiguous"], "unresolved")  # fmt: skip
        resolved = customer.where(status == "resolved")
        return pd.DataFrame({"kind": kind, "status": status, "customer_id": resolved}, index=hashed.index)

    def links(self) -> pd.DataFrame:
        """Identifiers resolved to exactly one customer (the link table)."""
        resolved = self.nodes[self.nodes["n_customers"] == 1]
        return resolved[LINK_SCHEMA.names].reset_index(drop=True)

    def ambiguous(self) -> pd.DataFrame:
        """Identifiers attached, directly or through the graph, to two or more customers."""
        found = self.nodes[self.nodes["n_customers"] >= 2]
        return found[["identifier_kind", "identifier_hash", "n_customers"]].reset_index(drop=True)


def build_graph(evidence: Evidence) -> IdentityGraph:
    """Connected components over identifier pairs, labelled with the customers attached to them."""
    attachments, pairs = evidence.attachments, evidence.pairs
    ends_a = pairs[["kind_a", "hash_a", "learned_from"]].set_axis([*NODE, "learned_from"], axis=1)
    ends_b = pairs[["kind_b", "hash_b", "learned_from"]].set_axis([*NODE, "learned_from"], axis=1)
    sightings = pd.concat([attachments[[*NODE, "learned_from"]], ends_a, ends_b], ignore_index=True)
    nodes = sightings[NODE].drop_duplicates(ignore_index=True)
    index = pd.MultiIndex.from_frame(nodes)

    a = index.get_indexer(pd.MultiIndex.from_frame(ends_a[NODE]))
    b = index.get_indexer(pd.MultiIndex.from_frame(ends_b[NODE]))
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(len(nodes), len(nodes)))
    _, component = connected_components(graph, directed=False)

    direct = index.get_indexer(pd.MultiIndex.from_frame(attachments[NODE]))
    attached = pd.DataFrame({
        "component": component[direct],
        "customer_id": attachments["customer_id"].to_numpy(),
    }).drop_duplicates()  # fmt: skip
    per_component = attached.groupby("component")["customer_id"].agg(["size", "first"])
    n_customers = per_component["size"].reindex(component, fill_value=0).to_numpy()
    customer = per_component["first"].reindex(component).to_numpy()

    order = {source: rank for rank, source in enumerate(SOURCES)}
    ranked = sightings.assign(node=index.get_indexer(pd.MultiIndex.from_frame(sightings[NODE])),
                              rank=sightings["learned_from"].map(order).fillna(len(SOURCES)))  # fmt: skip
    first_source = ranked.sort_values(["node", "rank"], kind="stable").drop_duplicates("node")
    learned_from = first_source.set_index("node")["learned_from"].reindex(range(len(nodes))).to_numpy()
    via = np.full(len(nodes), "graph", dtype=object)
    via[direct] = "direct"

    return IdentityGraph(nodes.assign(
        n_customers=n_customers.astype(np.int64),
        customer_id=pd.array(np.where(n_customers == 1, customer, None), dtype=STRING_DTYPE),
        learned_from=pd.array(learned_from, dtype=STRING_DTYPE),
        via=pd.array(via, dtype=STRING_DTYPE),
    ))  # fmt: skip


@dataclass(frozen=True)
class Stitched:
    """Parsed sources with identity applied, plus what stitching learned and counted."""

    sources: dict[str, ParsedSource]
    evidence: Evidence
    graph: IdentityGraph
    linked: dict[str, dict[str, int]]


def stitch(parsed: dict[str, ParsedSource], previous: Evidence, key: str) -> Stitched:
    """Fill customer_id from other identifiers where it is missing; quarantine rows that can't be linked.

    Evidence is learned only from rows that passed every contract rule. Rows carrying a customer_id
    keep it (the identifiers only teach the graph).
    """
    hashed = {source: hash_identifiers(p.identifiers, key) for source, p in parsed.items()}
    evidence = previous
    for source, p in parsed.items():
        valid = p.valid
        evidence = evidence.combine(
            evidence_from_rows(source, p.canonical["customer_id"][valid], hashed[source][valid])
        )
    graph = build_graph(evidence)

    out: dict[str, ParsedSource] = {}
    linked: dict[str, dict[str, int]] = {}
    for source, p in parsed.items():
        needs = p.valid & p.canonical["customer_id"].isna().to_numpy()
        if source == "customers" or not needs.any():
            out[source] = p
            continue
        found = graph.lookup(hashed[source][needs])
        canonical = p.canonical.copy()
        canonical.loc[found.index, "customer_id"] = found["customer_id"]
        rule, why = p.rule.copy(), p.reason.copy()
        for status, name in (("ambiguous", "ambiguous_identity"), ("unresolved", "unresolved_identity")):
            for kind in IDENTIFIER_KINDS:
                rows = found.index[(found["status"] == status) & (found["kind"] == kind)]
                rule[rows] = name
                why[rows] = reason(name, kind)
        resolved = found[found["status"] == "resolved"]
        linked[source] = {str(k): int(v) for k, v in resolved["kind"].value_counts().items()}
        out[source] = replace(p, canonical=canonical, rule=rule, reason=why)
    return Stitched(out, evidence, graph, linked)


def _ids_and_keys(ids: pd.Series) -> pd.DataFrame:
    """Distinct ids with their key: the id without leading zeros (``'000'`` keeps ``'0'``)."""
    distinct = pd.Series(ids.dropna().unique(), dtype=STRING_DTYPE)
    key = distinct.str.lstrip("0")
    return pd.DataFrame({"id": distinct, "key": key.mask(key == "", "0")})


def leading_zero_mismatches(ids: Mapping[str, pd.Series]) -> dict[tuple[str, str], pd.DataFrame]:
    """For every two sources (``source`` after ``other`` in the mapping's order), the distinct ids of
    ``source`` that match no ``other`` id exactly but do once leading zeros are stripped from both
    (``'3238'`` and ``'0003238'``), each with the id it meets (columns ``id``, ``other_id``, sorted).
    Pairs without such ids are left out.

    Why: customer_ids are compared exactly, so such a pair is two customers in the profile; a numeric
    export that dropped the zeros is the usual cause, and it is silent unless counted.
    """
    keyed = {source: _ids_and_keys(values) for source, values in ids.items()}
    padded = {source: bool((frame["id"] != frame["key"]).any()) for source, frame in keyed.items()}
    found: dict[tuple[str, str], pd.DataFrame] = {}
    for other, source in combinations(keyed, 2):
        if not (padded[source] or padded[other]):
            continue
        mine, theirs = keyed[source], keyed[other].rename(columns={"id": "other_id"})
        exact = pc.is_in(pa.array(mine["id"]), value_set=pa.array(theirs["other_id"]))
        unmatched = mine[~exact.to_numpy(zero_copy_only=False)]
        pairs = unmatched.merge(theirs, on="key")[["id", "other_id"]]
        if len(pairs):
            found[(source, other)] = pairs.sort_values(["id", "other_id"], ignore_index=True)
    return found
