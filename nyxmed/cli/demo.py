"""`nyxmed demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nyxmed.cli import options
from nyxmed.config import DemoConfig


def register(sub) -> None:
    options.add_command(sub, "demo", DemoConfig, demo,
                        "the main job end to end on the embedded synthetic data (docs/quickstart.md)",
                        config_help="YAML of DemoConfig fields (defaults: nyxmed.config.DemoConfig)",
                        overrides_help="DemoConfig keys (cases=1000 ranks=0) and recipe keys (train.epochs=2)")


def demo(args: argparse.Namespace) -> int:
    from nyxmed.demo import demo_inputs, load_demo_config, run_demo
    from nyxmed.io import check_outputs

    flags = [f"{k}={v}" for k, v in options.flags(args).items()]
    cfg = load_demo_config(args.config, [*args.overrides, *flags])
    if cfg.continuation:
        from nyxmed.demo_continue import CONTINUE_DIR, continuation_inputs, run_continuation

        check_outputs([args.config, *demo_inputs(cfg), *continuation_inputs(cfg)], [Path(cfg.out_dir) / CONTINUE_DIR])
        run_continuation(cfg)
        return 0
    check_outputs([args.config, *demo_inputs(cfg)], [cfg.out_dir])
    summary = run_demo(cfg)
    if not summary["floors_met"]:
        print("the trained adapter did not reach the demo's floors (see demo_summary.json and "
              "docs/performance.md); every step ran", file=sys.stderr)
    return 0
