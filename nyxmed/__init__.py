"""nyxmed: LoRA adapters on Llama-3 that write radiology billing codes, and their release tooling."""

__version__ = "0.1.0"
