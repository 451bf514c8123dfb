"""Liger switch: off by default and a no-op; on without the package, a clear error."""

from __future__ import annotations

import sys

import pytest

from nyxmed.config import TrainConfig, load_recipe
from nyxmed.training.kernels import KernelsUnavailable, apply_liger


def test_off_by_default_leaves_model_alone(tiny_base_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    forward, norm = type(model).forward, type(model.model.norm).forward
    assert load_recipe().train.use_liger is False
    assert apply_liger(model, TrainConfig()) is False
    assert type(model).forward is forward and type(model.model.norm).forward is norm


def test_on_without_liger_names_the_switch_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # as if not installed, even where it is
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)
    cfg = load_recipe(None, ["train.use_liger=true"]).train
    with pytest.raises(KernelsUnavailable, match=r"train\.use_liger=true.*pip install 'nyxmed\[kernels\]'"):
        apply_liger(object(), cfg)
