"""Training: SAM-style finetuning (``finetune``) and SAMI encoder pretraining (``pretrain``).

Both run as one process or under torchrun (DDP), checkpoint everything needed to resume
exactly, and write a run folder: ``log.jsonl``, ``state.pt`` and the final safetensors model.
"""

from .finetune import FinetuneConfig, finetune
from .loop import TrainOutcome
from .sami import SamiConfig, TeacherError, pretrain

__all__ = ["FinetuneConfig", "SamiConfig", "TeacherError", "TrainOutcome", "finetune", "pretrain"]
