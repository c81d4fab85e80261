"""The training loop: Trainer, callbacks and History."""

from .callbacks import (
                        Callback,
                        CSVLogger,
                        EarlyStopping,
                        JSONLinesLogger,
                        LearningRateScheduler,
                        ModelCheckpoint,
                        ProgressBar,
                        ReduceLROnPlateau,
                        StepState,
                        TerminateOnNonFinite,
)
from .history import History
from .trainer import Trainer

__all__ = ["Trainer", "History", "Callback", "StepState", "EarlyStopping", "ModelCheckpoint",
           "LearningRateScheduler", "ReduceLROnPlateau", "ProgressBar", "CSVLogger",
           "JSONLinesLogger", "TerminateOnNonFinite"]
