"""Documented, ranged dataclass fields: `setting` declares one, `default_of` re-declares a parent's with
another default (so each help text is written once); `ConfigError` names every bad key."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import field
from typing import Any

from rlhf_lab.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration value is out of range or inconsistent; the message names every bad key."""


def setting(default: Any, help: str, *, gt=None, ge=None, lt=None, le=None, choices=None):
    """A documented dataclass field with an optional range (`gt`, `ge`, `lt`, `le`) or `choices`."""
    meta = dict(help=help, gt=gt, ge=ge, lt=lt, le=le, choices=choices)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def default_of(owner: type, name: str, default: Any):
    """The field `name` of the dataclass `owner` (its help, range and choices) with another default:
    a subclass that only changes a parent's default writes `lr: float = default_of(TrainConfig, "lr",
    3e-3)`, so each help text is written once."""
    (declared,) = [f for f in dataclasses.fields(owner) if f.name == name]
    return setting(default, **declared.metadata)
