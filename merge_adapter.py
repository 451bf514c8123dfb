"""Merge a LoRA adapter into its base and verify: ``merge_adapter.py --base B --adapter A --out O``."""

from nyxmed.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["merge", *__import__("sys").argv[1:]]))
