"""Train a LoRA adapter: ``train.py --config configs/v17.yaml [key=value ...]`` (see docs/training.md)."""

from nyxmed.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *__import__("sys").argv[1:]]))
