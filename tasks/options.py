"""Checks of option values, each failing with a one-line UserError that names the option."""

from __future__ import annotations

from collections.abc import Sequence

from .io import UserError


def check_at_least(name: str, value: float, least: float, why: str = "") -> None:
    """``--data.<name>`` is at least ``least``."""
    if value < least:
        reason = f" ({why})" if why else ""
        raise UserError(f"--data.{name} must be at least {least}{reason}, not {value}")


def check_one_of(option: str, value: object, choices: Sequence[str]) -> None:
    """``option`` (spelt in full: ``--data.masking``) is one of ``choices``."""
    if value not in choices:
        raise UserError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
