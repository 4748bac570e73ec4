"""Where the package finds data it does not ship: only where an argument or the environment
says.

Two environment variables, both optional:

* ``TRIM_SHARED_DATA`` — a folder of local dataset copies (``gsm8k_test.jsonl``,
  ``math500.jsonl``, ...; see :data:`langchain_trim.eval.runner.DEFAULT_DATA_FILES`);
  without it ``trim eval`` loads from the Hugging Face Hub.
* ``TRIM_REFERENCE`` — the official TRIM release's reference tables
  (``pomdp_calibration.json``, ...); default ``$TRIM_SHARED_DATA/trim_reference``.  The
  official simulator and the default ``pomdp`` policy need them.

>>> import os, unittest.mock
>>> with unittest.mock.patch.dict(os.environ, {"TRIM_SHARED_DATA": "data"}, clear=True):
...     str(reference_dir())
'data/trim_reference'
>>> with unittest.mock.patch.dict(os.environ, {}, clear=True):
...     shared_data_dir() is None
True
"""

from __future__ import annotations

import os
from pathlib import Path

from langchain_trim.errors import DataNotFoundError

SHARED_DATA_ENV = "TRIM_SHARED_DATA"
REFERENCE_ENV = "TRIM_REFERENCE"


def _env_dir(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def shared_data_dir() -> Path | None:
    """``$TRIM_SHARED_DATA``, or ``None`` when it is not set."""
    return _env_dir(SHARED_DATA_ENV)


def reference_dir() -> Path | None:
    """``$TRIM_REFERENCE``, else ``$TRIM_SHARED_DATA/trim_reference``, else ``None``."""
    explicit = _env_dir(REFERENCE_ENV)
    if explicit is not None:
        return explicit
    shared = shared_data_dir()
    return None if shared is None else shared / "trim_reference"


def reference_file(name: str) -> Path:
    """A file of the official reference tables, or a one-line :class:`DataNotFoundError`."""
    folder = reference_dir()
    where = REFERENCE_ENV if _env_dir(REFERENCE_ENV) is not None else SHARED_DATA_ENV
    if folder is None:
        raise DataNotFoundError(
            f"{name} (official TRIM reference tables): set {REFERENCE_ENV} to the folder "
            f"holding it (or {SHARED_DATA_ENV} to one with a trim_reference/ folder), or pass "
            "a path"
        )
    path = folder / name
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist (the folder comes from ${where})")
    return path


__all__ = [
    "REFERENCE_ENV",
    "SHARED_DATA_ENV",
    "reference_dir",
    "reference_file",
    "shared_data_dir",
]
