"""What `nyxmed releases` shows and does per subcommand, apart from the registries themselves."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from nyxmed.io import check_outputs
from nyxmed.releases.publish import describe, publish
from nyxmed.releases.registry import Registry


def versions_table(registry: Registry):
    """A rich table of the registered versions, the production one marked."""
    from rich.table import Table

    from nyxmed.releases.parent import lineage_rows

    table = Table(title=f"releases in {registry!r}")
    for col in ("version", "kind", "parent", "created", "production"):
        table.add_column(col)
    for r in lineage_rows(registry):
        table.add_row(r["version"], r["kind"] or "", r["parent"] or "", r["created_at"] or "",
                      "<- production" if r["production"] else "")
    return table


def register_folder(registry: Registry, path: str | os.PathLike, version: str) -> list[dict[str, Any]]:
    """Stage ``path`` in a temporary folder and register it as ``version`` (frozen/epoch-N as VERSION-epochN)."""
    check_outputs([path], [getattr(registry, "root", None)])
    with tempfile.TemporaryDirectory() as work:
        return describe(publish(path, version, registry, work), repr(registry), False)
