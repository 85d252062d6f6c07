"""Config composition: every option of every group composes and instantiates; bad input fails early."""

from __future__ import annotations

import functools
import re

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from lightning.pytorch.strategies import SingleDeviceStrategy, StrategyRegistry
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ValidationError

from rlhf_lab.cli import CONF_DIR
from rlhf_lab.config import RENAMED, Config, ConfigError, upgrade_overrides, validate
from rlhf_lab.config.validation import MODEL_PATHS, is_folder_or_hub_id
from tests.helpers import compose_config

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]
REQUIRED = {
    ("data", "files"): ["data.sft.path=rows.jsonl"],
    ("data", "hub"): ["model=hf"],
    ("labeler", "file"): ["labeler.path=labels.jsonl"],
}


def test_groups_cover_the_package():
    assert {"stage", "model", "data", "peft", "trainer", "logger", "paths", "experiment"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option):
    required = REQUIRED.get((group, option), [])
    cfg = compose_config(f"{group}={option}", *required, fast=False)
    typed = validate(cfg)
    # every value the option file sets reaches the typed config (unless the command line sets it)
    text = (CONF_DIR / group / f"{option}.yaml").read_text()
    body = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
    package = "" if "# @package _global_" in text else f"{group}."
    overridden = {o.split("=")[0] for o in required}
    for key, value in _leaves({k: v for k, v in body.items() if k not in ("defaults", "hydra")}):
        if f"{package}{key}" not in overridden and not (isinstance(value, str) and "${" in value):
            assert functools.reduce(_child, f"{package}{key}".split("."), typed) == value, key
    if group == "trainer":
        if typed.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            pytest.skip("needs a GPU to instantiate")  # composition and validation are checked above
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.precision == typed.trainer.precision
        assert trainer.log_every_n_steps == typed.trainer.log_every_n_steps
        strategy = typed.trainer.strategy
        expected = SingleDeviceStrategy if strategy == "auto" else StrategyRegistry[strategy]["strategy"]
        assert isinstance(trainer.strategy, expected), (strategy, trainer.strategy)


def test_defaults_are_the_tiny_world():
    typed = validate(compose_config(fast=False))
    assert typed.stage == "pretrain" and typed.model.name_or_path is None
    assert typed.data.sft.path is None and typed.peft.method == "none"
    assert typed.logger.wandb.offline is True


def test_experiment_sets_groups_and_fields():
    typed = validate(compose_config("experiment=sft_lora", fast=False))
    assert (typed.stage, typed.peft.method, typed.peft.r, typed.peft.save) == ("sft", "lora", 8, "adapter")


@pytest.mark.parametrize(
    ("override", "error", "names"),
    [
        ("sft.lrr=1", ConfigCompositionException, "sft.lrr"),
        ("nonsense=1", ConfigCompositionException, "nonsense"),
        ("sft.lr=abc", ConfigCompositionException, "sft.lr"),
        ("peft.r=two", ConfigCompositionException, "peft.r"),
        ("stage=nope", ConfigCompositionException, "stage"),
    ],
)
def test_unknown_keys_and_wrong_types_fail_at_compose_time(override, error, names):
    with pytest.raises(error) as info:
        compose_config(override)
    text = str(info.value) + str(info.value.__cause__ or "")
    assert names in text


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("sft.lr=-1e-4", "sft.lr: must be > 0"),
        ("pretrain.lr=0", "pretrain.lr: must be > 0"),
        ("peft=lora peft.r=0", "peft.r: must be > 0"),
        ("peft=lora peft.dropout=1.5", "peft.dropout: must be < 1"),
        ("sft.schedule=cosin", "sft.schedule: 'cosin' is not one of"),
        ("data.on_bad_row=ignore", "data.on_bad_row"),
        ("data.max_prompt_length=64 data.max_length=64", "data.max_prompt_length"),
        ("world.model.num_kv_heads=3", "world.model.num_kv_heads"),
        ("sft.lr=nan", "sft.lr: must be finite"),
        ("pipeline=[sft,rlhf]", "pipeline: unknown stages ['rlhf']"),
        ("stage=rl pipeline=[sft,reward]", "pipeline: must end with the run's stage (rl)"),
        ("stage=rl trainer=fsdp", "trainer.strategy: fsdp shards the policy"),
        ("experiment=quickstart trainer=deepspeed_zero3", "trainer.strategy: deepspeed_stage_3 shards"),
    ],
)
def test_out_of_range_values_fail_before_any_model_is_built(override, names):
    with pytest.raises(ConfigError, match=re.escape(names)):
        validate(compose_config(*override.split()))


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate(compose_config("sft.lr=-1", "pretrain.max_steps=0"))
    assert "sft.lr" in str(info.value) and "pretrain.max_steps" in str(info.value)


def test_schema_rejects_keys_in_python_too():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(Config)
    with pytest.raises(ConfigAttributeError):
        cfg.sft.not_a_key = 1
    with pytest.raises(ValidationError):
        cfg.sft.max_steps = "many"


def test_a_target_outside_the_allow_list_fails_naming_the_key(monkeypatch):
    with pytest.raises(
        ConfigError, match="trainer._target_: 'os.system' is not under an allowed module prefix"
    ):
        validate(compose_config("trainer._target_=os.system"))
    monkeypatch.setenv("RLHF_LAB_ALLOWED_TARGETS", "os.")  # the environment, not a config file, extends it
    assert validate(compose_config("trainer._target_=os.system")).trainer._target_ == "os.system"


def test_quickstart_lists_every_stage_in_order():
    typed = validate(compose_config("experiment=quickstart", fast=False))
    assert typed.stage == "eval" and typed.pipeline == [
        "pretrain",
        "sft",
        "collect",
        "reward",
        "rl",
        "bon",
        "eval",
    ]


# --------------------------------------------------------------------- one default, one help, renames
IDENTITY = {"stage", "algo.name", "labeler.kind", "objective.kind", "peft.method"}  # what an option selects


def _child(node, key: str):
    return node[int(key)] if key.isdigit() else getattr(node, key)


def _leaves(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}{key}.")
    elif isinstance(node, list) and any(isinstance(v, dict) for v in node):  # e.g. labeler.annotators
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}{i}.")
    else:
        yield path[:-1], node


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_an_option_file_states_only_what_differs_from_the_schema(group, option):
    import yaml
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(Config)
    text = (CONF_DIR / group / f"{option}.yaml").read_text()
    body = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k not in ("defaults", "hydra")}
    package = "" if "# @package _global_" in text else f"{group}."
    repeated = [
        f"{package}{key}: {value!r}"
        for key, value in _leaves(body)
        if f"{package}{key}" not in IDENTITY
        and OmegaConf.select(schema, f"{package}{key}", default="<absent>") == value
    ]
    assert not repeated, f"{group}/{option}.yaml repeats the schema's defaults: {repeated}"


def test_each_help_text_is_written_once():
    import ast

    sources = sorted((CONF_DIR.parent / "rlhf_lab" / "config").glob("*.py"))
    helps = [
        node.args[1].value
        for source in sources
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "setting"
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
    ]
    assert len(helps) > 100
    assert sorted({h for h in helps if helps.count(h) > 1}) == []


def test_default_of_changes_the_default_and_keeps_the_help():
    import dataclasses

    from rlhf_lab.config import PretrainConfig, TrainConfig

    parent = {f.name: f for f in dataclasses.fields(TrainConfig)}["lr"]
    child = {f.name: f for f in dataclasses.fields(PretrainConfig)}["lr"]
    assert (child.default, parent.default) == (3e-3, 3e-4)
    assert child.metadata == parent.metadata and child.metadata["help"] == "peak AdamW learning rate"
    with pytest.raises(ConfigError, match=re.escape("pretrain.lr: must be > 0")):
        validate(compose_config("pretrain.lr=0"))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["reward=gold"], ["objective=gold"]),
        (
            ["reward.path=/rm", "+reward.foo=1", "++reward.bar=2"],
            ["objective.path=/rm", "+objective.foo=1", "++objective.bar=2"],
        ),
        (["~reward", "~algo.k=2"], ["~objective", "~algo.samples_per_prompt=2"]),
        (
            ["reward=gold,rm", "algo.k=2,4", "collect.k=3"],
            ["objective=gold,rm", "algo.samples_per_prompt=2,4", "collect.samples_per_prompt=3"],
        ),
        (
            ["-m", "--cfg", "job", "reward_model.lr=1e-3", "algo.kl.beta=0.1", "seed=1"],
            ["-m", "--cfg", "job", "reward_model.lr=1e-3", "algo.kl.beta=0.1", "seed=1"],
        ),
        (
            ["experiment=quickstart", "hydra.run.dir=reward=x"],
            ["experiment=quickstart", "hydra.run.dir=reward=x"],
        ),
    ],
)
def test_renamed_keys_are_rewritten_to_their_new_names(old, new):
    assert upgrade_overrides(old) == new


def test_a_renamed_key_names_its_new_name_once(caplog):
    with caplog.at_level("WARNING", logger="rlhf_lab.config"):
        upgrade_overrides(["reward=rm", "reward.path=/rm", "algo.k=4", "seed=1"])
    assert [r.getMessage() for r in caplog.records] == [
        "'reward' is now 'objective'; the old name works for now",
        "'algo.k' is now 'algo.samples_per_prompt'; the old name works for now",
    ]
    assert set(RENAMED) == {"reward", "algo.k", "collect.k"}


def test_old_names_compose_the_same_config_as_new_ones():
    from omegaconf import OmegaConf

    old = compose_config(
        "stage=rl", "reward=keyword", "reward.keywords=[good]", "algo=grpo", "algo.k=8", "collect.k=3"
    )
    new = compose_config(
        "stage=rl",
        "objective=keyword",
        "objective.keywords=[good]",
        "algo=grpo",
        "algo.samples_per_prompt=8",
        "collect.samples_per_prompt=3",
    )
    assert OmegaConf.to_yaml(old) == OmegaConf.to_yaml(new)
    typed = validate(old)
    assert (typed.objective.kind, typed.objective.keywords) == ("keyword", ["good"])
    assert (typed.algo.samples_per_prompt, typed.collect.samples_per_prompt) == (8, 3)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("gpt2", True),
        ("EleutherAI/pythia-160m", True),
        ("org/model.v1_2", True),
        ("/nonexistent/folder", False),
        ("./policy", False),
        ("~/policy", False),
        ("runs/a/policy", False),  # a second slash: a path, not a hub id
        ("org--x/model", False),
        ("a model", False),
    ],
)
def test_a_model_path_is_a_folder_or_a_plausible_hub_id(path, ok):
    assert is_folder_or_hub_id(path) is ok


def test_every_model_path_key_is_checked(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    validate(compose_config(*(f"{key}={tmp_path / 'folder'}" for key in MODEL_PATHS)))
    validate(compose_config(*(f"{key}=org/model" for key in MODEL_PATHS)))
    bad = {key: tmp_path / ("file" if i % 2 else "missing") for i, key in enumerate(MODEL_PATHS)}
    with pytest.raises(ConfigError) as error:
        validate(compose_config(*(f"{key}={path}" for key, path in bad.items())))
    for key, path in bad.items():
        assert f"{key}: no such folder: {path}" in str(error.value)
