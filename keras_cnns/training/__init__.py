"""Training: optimisers, schedules, callbacks, the trainer, transfer learning, ensembles (the data sets are
``keras_cnns.data``, which export uses too).

    >>> from keras_cnns.training import TrainConfig, train
    >>> result = train(TrainConfig(model="lenet5", data="digits", epochs=30))
    >>> result.metrics["accuracy"], result.run_dir

Modules: ``optimizers``, ``schedules``, ``callbacks``, ``trainer`` (``train``/``resume``/``finetune``),
``evaluation``, ``transfer`` (the fine-tuning plan), ``ensemble`` (``ensemble_runs``, snapshot ensembles),
``runs`` (the run directory).
"""
from keras_cnns.training.ensemble import build_ensemble, ensemble_runs
from keras_cnns.training.evaluation import evaluate_run
from keras_cnns.training.trainer import TrainConfig, TrainResult, finetune, resume, train

__all__ = ["TrainConfig", "TrainResult", "train", "resume", "evaluate_run", "finetune", "ensemble_runs",
           "build_ensemble"]
