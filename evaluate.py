"""Evaluate a model or rescore predictions: ``evaluate.py --model BASE [--adapter DIR] ...`` (docs/metrics.md)."""

from nyxmed.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *__import__("sys").argv[1:]]))
