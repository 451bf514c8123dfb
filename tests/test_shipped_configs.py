"""What ships is tested as shipped: every recipe in configs/ and every DeepSpeed JSON in ds_configs/
loads through the project's own loaders, and the files they name exist."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from nyxmed.config import ConfigError, Recipe, TrainConfig, load_recipe
from nyxmed.demo import load_demo_config
from nyxmed.training.deepspeed import ZERO3_KEYS, deepspeed_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
DS_CONFIGS = sorted((ROOT / "ds_configs").glob("*.json"))


def test_the_shipped_files_are_found():
    assert {p.name for p in RECIPES} >= {"v17.yaml", "tiny.yaml", "demo.yaml"}
    assert {p.name for p in DS_CONFIGS} >= {"zero2.json", "zero3.json", "zero3_offload.json"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_names_files_that_exist(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe) and recipe.name == path.stem
    if recipe.prompt.rules_file:
        assert (ROOT / recipe.prompt.rules_file).is_file(), recipe.prompt.rules_file
    if recipe.train.deepspeed:
        ds_path = ROOT / recipe.train.deepspeed
        assert ds_path in DS_CONFIGS, recipe.train.deepspeed
        assert deepspeed_config(str(ds_path), recipe.train) in (str(ds_path), json.loads(ds_path.read_text()))


def test_the_demo_config_loads_its_recipe():
    cfg = load_demo_config(overrides=["cases=10", "train.epochs=2"])
    assert cfg.cases == 10 and ROOT / cfg.recipe in RECIPES
    recipe = load_recipe(ROOT / cfg.recipe, cfg.overrides)
    assert recipe.name == "demo" and recipe.train.epochs == 2


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
def test_every_deepspeed_config_loads_with_the_zero3_overrides(path):
    shipped = json.loads(path.read_text())
    stage = shipped["zero_optimization"]["stage"]
    assert deepspeed_config(str(path), TrainConfig()) == str(path)  # no override: DeepSpeed reads the file itself
    knobs = replace(TrainConfig(), zero3_max_live_parameters=123, zero3_overlap_comm=False)
    if stage != 3:
        with pytest.raises(ConfigError, match=rf"train\.zero3_\w+: set, but .*stage={stage}"):
            deepspeed_config(str(path), knobs)
        return
    expected = json.loads(path.read_text())
    expected["zero_optimization"].update({ZERO3_KEYS["zero3_max_live_parameters"]: 123,
                                          ZERO3_KEYS["zero3_overlap_comm"]: False})
    assert deepspeed_config(str(path), knobs) == expected  # the two knobs written over, every other key as shipped
