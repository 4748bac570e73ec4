"""Embedded-model resolution: chunk assembly, sha256 verification, clear errors."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from langchain_trim.errors import ModelNotFoundError
from langchain_trim.local import registry
from langchain_trim.local.registry import EmbeddedModel, assemble, get_embedded, resolve_model_path


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
    path.with_name(path.name + ".verified.json").unlink()
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
