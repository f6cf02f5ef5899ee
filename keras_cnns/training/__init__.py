"""Training: data sets, optimisers, schedules, callbacks, the trainer, transfer learning, ensembles.

    >>> from keras_cnns.training import TrainConfig, train
    >>> result = train(TrainConfig(model="lenet5", data="digits", epochs=30))
    >>> result.metrics["accuracy"], result.run_dir

Modules: ``data`` (specs, splits, tf.data pipelines, augmentation), ``optimizers``, ``schedules``,
``callbacks``, ``trainer`` (``train``/``resume``), ``evaluation``, ``transfer`` (``finetune``),
``ensemble`` (``ensemble_runs``, snapshot ensembles), ``runs`` (the run directory).
"""
from keras_cnns.training.ensemble import build_ensemble, ensemble_runs
from keras_cnns.training.evaluation import evaluate_run
from keras_cnns.training.trainer import TrainConfig, TrainResult, resume, train
from keras_cnns.training.transfer import finetune

__all__ = ["TrainConfig", "TrainResult", "train", "resume", "evaluate_run", "finetune", "ensemble_runs",
           "build_ensemble"]
