"""Every Feast name this project uses from outside Feast's public API, in one place.

The fast online paths (``features.materialize`` writes and ``features.online`` reads Feast's SQLite
online format byte for byte; ``features.redis_online`` Feast's Redis layout), the registry apply in ``features.store`` and the CLI's workspace
check (``features.feature_repo.workspace_registry`` extends Feast's file registry store) and the
Spark offline store's sources (``features.spark_store``; Feast keeps them under ``contrib``) rest on
these. They can change in any Feast release: ``pyproject.toml`` caps Feast to the versions they are
tested with, and the equivalence tests against Feast's own API (``tests/features/test_store.py``,
``tests/features/test_online.py``: materialised rows read back by ``get_online_features``, fast
retrieval equal to ``get_historical_features``) are the upgrade check.
"""

from feast.feature_view import DUMMY_ENTITY
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
from feast.infra.online_stores.helpers import _mmh3 as redis_field_hash
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.infra.registry.file import FileRegistryStore
from feast.project import Project
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_contents import RepoContents
from feast.repo_operations import extract_objects_for_apply_delete
from feast.type_map import feast_value_type_to_python_type
from feast.utils import to_naive_utc

__all__ = [
    "DUMMY_ENTITY",
    "EntityKeyProto",
    "FileRegistryStore",
    "Project",
    "RepoContents",
    "SparkSource",
    "SqliteOnlineStore",
    "ValueProto",
    "compute_table_id",
    "redis_field_hash",
    "extract_objects_for_apply_delete",
    "feast_value_type_to_python_type",
    "get_offline_store_from_config",
    "serialize_entity_key",
    "to_naive_utc",
]
