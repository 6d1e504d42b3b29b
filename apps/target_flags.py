"""Command-line flags built from what each registered target declares (``export_options`` and
``runtime_options``), so a new runtime's options reach ``export``, ``validate`` and ``bench``
without a change here. A flag declared by several targets (``--threads``) is one flag."""

from __future__ import annotations

import argparse
from typing import Any

from edge_sam.errors import EdgeSamError
from edge_sam.targets.core.registry import get_target, target_names
from edge_sam.targets.core.target import TargetOption

STAGES = ("export", "runtime")


def declared_options(stage: str) -> dict[str, tuple[TargetOption, list[str]]]:
    """Every option declared for ``stage``, by name, with the targets that declare it."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    found: dict[str, tuple[TargetOption, list[str]]] = {}
    for name in target_names():
        target = get_target(name)
        for option in target.export_options if stage == "export" else target.runtime_options:
            first, owners = found.setdefault(option.name, (option, []))
            if (first.kind, first.choices, first.separator) != (option.kind, option.choices, option.separator):
                raise EdgeSamError(f"targets {owners[0]} and {name} declare {option.flag} with different types")
            owners.append(name)
    return found


def add_target_flags(parser: argparse.ArgumentParser, stage: str) -> None:
    """One flag per declared option, grouped under the targets that take it."""
    group = parser.add_argument_group(f"target {stage} options (each applies to the targets named)")
    for name, (option, owners) in sorted(declared_options(stage).items()):
        help_text = f"{', '.join(owners)}: {option.help}"
        if option.kind is bool:
            group.add_argument(option.flag, dest=_dest(stage, name), action="store_true", default=None, help=help_text)
        else:
            group.add_argument(option.flag, dest=_dest(stage, name), default=None, choices=option.choices,
                               type=option.parse if option.choices is None else None, help=help_text,
                               metavar=None if option.choices else name.upper())


def given_options(args: argparse.Namespace, stage: str, targets: list[str]) -> dict[str, dict[str, Any]]:
    """Per target, the declared options the user gave; one error for a flag none of ``targets``
    takes, naming the targets that do."""
    declared = declared_options(stage)
    given = {name: getattr(args, _dest(stage, name)) for name in declared}
    given = {name: value for name, value in given.items() if value is not None}
    for name, value in given.items():
        option, owners = declared[name]
        if not set(owners) & set(targets):
            raise EdgeSamError(f"{option.flag} applies to target {', '.join(owners)} only, not {', '.join(sorted(set(targets)))}")
    return {t: {name: value for name, value in given.items() if t in declared[name][1]} for t in targets}


def _dest(stage: str, name: str) -> str:
    return f"{stage}_opt_{name}"
