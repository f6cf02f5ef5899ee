"""Full-batch L-BFGS (`--optimizer lbfgs`), the quasi-Newton method of the notes: every iteration takes the loss
and gradient over the whole training split, builds a curvature estimate from the last few steps, and a line
search picks the step, so there is no learning rate and no schedule. SciPy's L-BFGS-B minimises (TensorFlow
Probability, the other maintained implementation, is not a dependency of cnnkit); TensorFlow computes the loss
and gradient as one traced pass over the split.

The objective must be one fixed function for the line search to mean anything: the model runs in inference
mode (dropout off), so a model with batch norm (whose batch statistics change the loss with every batch) is
refused, as are augmentation and mixing. An "epoch" of a run is one L-BFGS iteration.
"""
import numpy as np

from keras_cnns.errors import CnnkitError

#: the training split, as float32 inputs, must fit in this much memory (one pass per gradient evaluation)
MAX_BYTES = 2 * 2 ** 30
#: curvature pairs kept (SciPy's default, 10)
MEMORY = 10


def refuse_if_needed(config, model, data):
    """A one-line error when ``config`` cannot train ``model`` on ``data`` with full-batch L-BFGS."""
    why = _refusal(config, model, data)
    if why:
        raise CnnkitError(f"--optimizer lbfgs: {why}")


def _refusal(config, model, data):
    from keras_cnns.training.batchnorm import batch_norm_layers

    size = len(data.train) * int(np.prod(data.input_shape)) * 4
    if config.strategy != "default":
        return "full-batch L-BFGS runs on one device: drop --strategy"
    if len(model.outputs) > 1:
        return f"{config.model} trains with auxiliary classifiers; full-batch L-BFGS takes one output"
    if batch_norm_layers(model, trainable_only=False):
        return (f"{config.model} has batch norm, whose batch statistics change the loss with every batch; full-batch "
                "L-BFGS needs one fixed loss: choose another --optimizer")
    if config.augment or config.mixup or config.cutmix:
        return "augmentation and mixing change the loss at every step; full-batch L-BFGS needs one fixed loss"
    if not data.in_memory or size > MAX_BYTES:
        return (f"the training split is {size / 2 ** 30:.1f} GiB as float32 inputs, over the {MAX_BYTES / 2 ** 30:.0f} "
                "GiB full-batch L-BFGS holds in memory: use a mini-batch --optimizer (adam, momentum)")
    return None


class Objective:
    """The full-batch loss and its gradient as functions of one flat float64 vector of the trainable weights.

    ``dataset`` yields (images, one-hot targets[, sample weights]) batches covering the split once; the loss is
    the weighted cross-entropy summed and divided by the number of images, plus the model's own penalties."""

    def __init__(self, model, dataset, label_smoothing=0.0):
        import tensorflow as tf
        import tf_keras as keras

        self.model, self.dataset = model, dataset
        self.variables = model.trainable_variables
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.images = sum(int(batch[0].shape[0]) for batch in dataset)
        self.evaluations = 0
        cross_entropy = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                             reduction=keras.losses.Reduction.SUM)

        @tf.function(reduce_retracing=True)
        def batch(x, target, weights):
            with tf.GradientTape() as tape:
                loss = cross_entropy(target, model(x, training=False), sample_weight=weights)
            return loss, tape.gradient(loss, self.variables)

        @tf.function
        def penalty():
            with tf.GradientTape() as tape:
                loss = tf.add_n([tf.cast(p, tf.float32) for p in model.losses]) if model.losses else tf.constant(0.0)
            grads = tape.gradient(loss, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return loss, grads

        self._batch, self._penalty = batch, penalty

    def get(self):
        return np.concatenate([v.numpy().ravel() for v in self.variables]).astype(np.float64)

    def set(self, flat):
        import tf_keras as keras

        parts = np.split(np.asarray(flat, np.float32), np.cumsum(self.sizes)[:-1])
        keras.backend.batch_set_value([(v, p.reshape(s)) for v, p, s in zip(self.variables, parts, self.shapes)])

    def __call__(self, flat):
        """(loss, gradient) at ``flat``, both float64 (the weights are left at ``flat``)."""
        import tensorflow as tf

        self.set(flat)
        self.evaluations += 1
        total, grads = 0.0, [np.zeros(s, np.float64) for s in self.shapes]
        for batch in self.dataset:
            x, target = batch[0], batch[1]
            weights = batch[2] if len(batch) > 2 else tf.ones(tf.shape(x)[:1])
            loss, found = self._batch(x, target, weights)
            total += float(loss)
            for g, f in zip(grads, found):
                g += f.numpy()
        loss, found = self._penalty()
        total = total / self.images + float(loss)
        grads = [g / self.images + f.numpy() for g, f in zip(grads, found)]
        return total, np.concatenate([g.ravel() for g in grads])


def minimize(objective, iterations, on_iteration=None, max_evaluations=None):
    """Run L-BFGS-B from the model's weights for at most ``iterations`` iterations (``max_evaluations`` loss and
    gradient evaluations); ``on_iteration(i, loss)`` after each: returning True stops. The model is left at the
    best point found. -> SciPy's OptimizeResult."""
    from scipy.optimize import minimize as scipy_minimize

    done = []

    def callback(intermediate_result):  # SciPy's name for it: the iteration's point and loss
        objective.set(intermediate_result.x)
        stop = on_iteration(len(done), float(intermediate_result.fun)) if on_iteration else False
        done.append(True)
        if stop:
            raise StopIteration

    options = {"maxiter": iterations, "maxcor": MEMORY, "maxfun": max_evaluations or iterations * 20}
    result = scipy_minimize(objective, objective.get(), jac=True, method="L-BFGS-B", callback=callback,
                            options=options)
    objective.set(result.x)
    return result




def fit(model, objective_data, train_data, val_data, callbacks, config, initial_epoch=0, verbose=0):
    """Train ``model`` by full-batch L-BFGS for the epochs left after ``initial_epoch`` (one iteration each),
    driving the run's Keras callbacks as ``fit`` does: each iteration's end is an epoch's end, with the loss,
    the training and validation metrics in its logs (so history.csv, the checkpoints and early stopping work as
    for any run). ``objective_data``: the split as weighted batches (Objective); ``train_data`` / ``val_data``:
    what the epoch's metrics are measured on. -> {"iterations", "evaluations", "converged", "message"}"""
    import tf_keras as keras

    objective = Objective(model, objective_data, config.label_smoothing)
    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=config.epochs, steps=1, verbose=verbose)
    model.stop_training = False

    def on_iteration(i, loss):
        epoch = initial_epoch + i
        logs = {"loss": loss, **{k: v for k, v in model.evaluate(train_data, verbose=0, return_dict=True).items()
                                 if k != "loss"}}
        logs.update({f"val_{k}": v for k, v in model.evaluate(val_data, verbose=0, return_dict=True).items()})
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training or epoch + 1 >= config.epochs:
            return True
        hooks.on_epoch_begin(epoch + 1)
        return False

    hooks.on_train_begin()
    hooks.on_epoch_begin(initial_epoch)
    result = minimize(objective, config.epochs - initial_epoch, on_iteration)
    hooks.on_train_end()
    stopped = "early stopping" if model.stop_training else f"the run's {config.epochs} epochs"
    return {"iterations": int(result.nit), "evaluations": objective.evaluations,
            "stopped": stopped if "StopIteration" in str(result.message) else str(result.message)}
