"""Training SAEs from an activation cache: config, data stream, sparsity controller,
checkpoints and the trainer. The workflow calls :func:`train_sae`."""

from saesteer.training.config import TrainConfig
from saesteer.training.controller import SparsityController
from saesteer.training.data import CacheSource, ShuffledBatches, TensorSource
from saesteer.training.group import GroupMember, GroupTrainer, run_group_training, train_sae_group, train_sae_group_streaming
from saesteer.training.trainer import Trainer, TrainingDiverged, run_training, train_sae

__all__ = [
    "CacheSource",
    "GroupMember",
    "GroupTrainer",
    "ShuffledBatches",
    "SparsityController",
    "TensorSource",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "run_group_training",
    "run_training",
    "train_sae",
    "train_sae_group",
    "train_sae_group_streaming",
]
