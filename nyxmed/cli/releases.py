"""`nyxmed merge`, `nyxmed publish` and `nyxmed releases list|promote|rollback|history|register`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nyxmed.cli import options
from nyxmed.cli.show import print_json
from nyxmed.config import MergeConfig, PublishConfig, ReleaseConfig


def register(sub) -> None:
    options.add_command(sub, "merge", MergeConfig, merge, "merge a LoRA adapter into its base, verify, save sharded safetensors")

    p = sub.add_parser("publish", help="push an adapter, merged model or frozen checkpoint to a Hub repo, tagged",
                       description="Token: $HF_TOKEN or `hf auth login`; never printed. An adapter's frozen/epoch-N "
                                   "checkpoints are published first as VERSION-epochN.")
    p.add_argument("path", help="adapter folder, merged model folder or frozen/epoch-N folder")
    options.add_config_arguments(p, PublishConfig)
    p.set_defaults(func=publish)

    p = sub.add_parser("releases", help="versions, production pointer, promote, rollback, history",
                       description="Local registry by default (--registry, $NYXMED_REGISTRY, out/registry); "
                                   "--repo ORG/NAME for the Hub (versions are tags, production a branch).")
    options.add_config_arguments(p, ReleaseConfig, overrides=False)
    rsub = p.add_subparsers(dest="releases_cmd", required=True)
    subs = {"list": (releases_list, "versions, the production one marked"),
            "promote": (releases_promote, "verify VERSION's checksums, then point production at it"),
            "rollback": (releases_rollback, "point production back at the previous version (or --to VERSION)"),
            "history": (releases_history, "every register / promote / rollback"),
            "register": (releases_register, "store a folder as VERSION (frozen/epoch-N as VERSION-epochN)")}
    made = {}
    for name, (func, help_text) in subs.items():
        made[name] = rsub.add_parser(name, help=help_text)
        made[name].set_defaults(func=func)
    made["promote"].add_argument("version")
    made["rollback"].add_argument("--to", help="e.g. v17-epoch1")
    made["register"].add_argument("path")
    made["register"].add_argument("--version", required=True)
    for sp in made.values():
        sp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="ReleaseConfig overrides, e.g. registry=DIR")


def merge(args: argparse.Namespace) -> int:
    from nyxmed.io import check_outputs
    from nyxmed.merge import merge_adapter

    cfg = options.load(MergeConfig, args)
    check_outputs([args.config, cfg.base, cfg.adapter, cfg.probes], [cfg.out])
    manifest = merge_adapter(cfg.base, cfg.adapter, cfg.out, dtype=cfg.dtype, revision=cfg.revision,
                             max_shard_size=cfg.max_shard_size, device_map=cfg.device_map,
                             probes=cfg.probes, max_new_tokens=cfg.max_new_tokens, overwrite=cfg.overwrite)
    print_json({"out": cfg.out, "verification": manifest["verification"], "files": len(manifest["files"])})
    return 0


def publish(args: argparse.Namespace) -> int:
    from nyxmed.io import check_outputs
    from nyxmed.releases.hub import HubRegistry
    from nyxmed.releases.publish import CardInputs, describe, publish as publish_release

    cfg = options.load(PublishConfig, args)
    inputs = CardInputs(cfg.metrics, cfg.compare, cfg.previous, cfg.dataset_manifest, cfg.license)
    workdir = Path(cfg.out or Path("out/publish") / cfg.repo.replace("/", "--"))
    check_outputs([args.config, args.path, cfg.metrics, cfg.compare, cfg.dataset_manifest], [workdir])
    registry = None if cfg.dry_run else HubRegistry(cfg.repo)
    staged = publish_release(args.path, cfg.version, registry, workdir, cfg.repo, inputs)
    print_json(describe(staged, f"hub:{cfg.repo}", cfg.dry_run))
    return 0


def _registry(args: argparse.Namespace):
    from nyxmed.releases import open_registry

    cfg = options.load(ReleaseConfig, args)
    return open_registry(cfg.registry, cfg.repo)


def releases_list(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nyxmed.releases.views import versions_table

    Console().print(versions_table(_registry(args)))
    return 0


def releases_promote(args: argparse.Namespace) -> int:
    print_json(_registry(args).promote(args.version))
    return 0


def releases_rollback(args: argparse.Namespace) -> int:
    print_json(_registry(args).rollback(args.to))
    return 0


def releases_history(args: argparse.Namespace) -> int:
    for entry in _registry(args).history():
        print(json.dumps(entry))
    return 0


def releases_register(args: argparse.Namespace) -> int:
    from nyxmed.releases.views import register_folder

    print_json(register_folder(_registry(args), args.path, args.version))
    return 0
