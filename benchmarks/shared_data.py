"""Where the benchmarks find the development machines' data.

The package names no path: it reads ``$TRIM_SHARED_DATA`` (dataset copies) and
``$TRIM_REFERENCE`` (the official release's tables), see ``langchain_trim.paths``.  The
benchmarks default both to the data folder next to the checkout, ``<repo>/../shared/data``,
and :func:`use_shared_data` exports those defaults for the package to read.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TRIM_SHARED_DATA") or ROOT.parent / "shared" / "data")
REFERENCE = Path(os.environ.get("TRIM_REFERENCE") or SHARED_DATA / "trim_reference")


def use_shared_data() -> None:
    """Let the package find the data here unless the environment already says where."""
    os.environ.setdefault("TRIM_SHARED_DATA", str(SHARED_DATA))
    os.environ.setdefault("TRIM_REFERENCE", str(REFERENCE))
