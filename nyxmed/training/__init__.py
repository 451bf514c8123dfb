"""LoRA fine-tuning with the transformers Trainer: PEFT, DeepSpeed, callbacks and artifacts.

``train(recipe) -> TrainResult`` is the library entry; ``nyxmed train`` and ``train.py`` only parse.
"""

from nyxmed.training.run import TrainResult, train

__all__ = ["TrainResult", "train"]
