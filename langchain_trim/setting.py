"""The ``Setting`` protocol: the models of one TRIM configuration, beside the state schema.

The eval runner, the CLI and the server build graphs from a setting; anything with these
attributes is one: :class:`~langchain_trim.local.setting.LocalSetting` (embedded models),
:func:`~langchain_trim.eval.fake.fake_setting` (scripted fakes), or your own dataclass.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from langchain_trim.prm.base import ProcessRewardModel
from langchain_trim.step_format import StepFormat


@runtime_checkable
class Setting(Protocol):
    """Weak and strong models (chat models, init strings or step generators) and a PRM."""

    weak: Any
    strong: Any
    prm: ProcessRewardModel | None


def step_formats(setting: Setting) -> tuple[str | StepFormat | None, str | StepFormat | None]:
    """The setting's step formats for weak and strong (``None``: the library default)."""
    return getattr(setting, "step_format", None), getattr(setting, "strong_step_format", None)


def load_models(setting: Setting) -> None:
    """Load every model of ``setting`` now (weak, strong, the PRM's encoder), so a missing
    file fails at once rather than on the first problem; models without ``load`` are
    left alone."""
    encoder = getattr(setting.prm, "encoder", None)
    for model in (setting.weak, setting.strong, encoder):
        if model is not None and hasattr(model, "load"):
            model.load()


__all__ = ["Setting", "load_models", "step_formats"]
