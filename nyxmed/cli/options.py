"""Command-line flags generated from a config dataclass (as TRL's HfArgumentParser does)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from nyxmed import config as cfgmod

_DEST = "field:"  # flag destinations apart from positionals such as `overrides`


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, overrides: bool = True,
                         config_help: str | None = None, overrides_help: str | None = None) -> None:
    """``--config FILE``, one flag per field of ``cls`` (help from field metadata) and ``KEY=VALUE`` overrides."""
    parser.add_argument("--config", help=config_help or f"YAML of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    for f in cfgmod.cli_fields(cls):
        tp, help_text = _plain(hints[f.name]), f.metadata.get("help", "")
        default = "" if f.default in (None, dataclasses.MISSING) else f" (default {f.default})"
        kw: dict[str, Any] = {"dest": _DEST + f.name, "default": argparse.SUPPRESS}
        if tp is not bool:
            kw["metavar"] = f.name.upper()
        if tp is bool:
            # --flag / --no-flag: a field that defaults to true (nyxmed code's constrained) can be turned off
            parser.add_argument(cfgmod.flag_of(f), action=argparse.BooleanOptionalAction,
                                help=(help_text + default).replace("%", "%%"), **kw)
        elif typing.get_origin(tp) is list:
            parser.add_argument(cfgmod.flag_of(f), action="append", help=help_text, **kw)
        else:
            parser.add_argument(cfgmod.flag_of(f), type=tp if tp in (int, float) else str,
                                help=(help_text + default).replace("%", "%%"), **kw)
    if overrides:
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help=overrides_help or f"dotted overrides of {cls.__name__} fields, e.g. {_example(cls)}")


def flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as flags on the command line."""
    return {k[len(_DEST):]: v for k, v in vars(args).items() if k.startswith(_DEST)}


def load(cls: type, args: argparse.Namespace):
    """The command's config from ``--config``, the overrides and the flags (checked; ConfigError names the key)."""
    return cfgmod.load_command(cls, args.config, getattr(args, "overrides", None), flags(args))


def _plain(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _example(cls: type) -> str:
    f = next((f for f in cfgmod.cli_fields(cls) if f.default not in (None, dataclasses.MISSING)),
             cfgmod.cli_fields(cls)[0])
    return f"{f.name}={f.default if f.default not in (None, dataclasses.MISSING) else '...'}"


def add_command(sub, name: str, cls: type, func, help: str, **kw: Any) -> argparse.ArgumentParser:
    """A subcommand whose flags come from ``cls`` (``kw``: ``config_help``, ``overrides_help``), run by ``func``."""
    parser = sub.add_parser(name, help=help)
    add_config_arguments(parser, cls, **kw)
    parser.set_defaults(func=func)
    return parser
