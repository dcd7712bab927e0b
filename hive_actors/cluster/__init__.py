"""hive_actors on a Ray cluster: ``ClusterHive`` has Hive's API over many machines.

Needs Ray: ``pip install 'hive_actors[ray]'``. See docs/cluster.md.
"""

from __future__ import annotations

try:
    import ray  # noqa: F401  # the one dependency the core install lacks
except ImportError:  # pragma: no cover - what a user without the extra sees
    raise ImportError("hive_actors.cluster needs Ray: pip install 'hive_actors[ray]'") from None

from hive_actors._models import HostInfo
from hive_actors.cluster._hive import ClusterHive
from hive_actors.errors import HostUnavailable

__all__ = ["ClusterHive", "HostInfo", "HostUnavailable"]
