"""Optimisers from the notes (Keras implementations) and the regularisers that go with them.

=========  ===============================================  =========
name       update                                           default lr
=========  ===============================================  =========
sgd        w -= lr * g                                      0.01
momentum   v = rho v - lr g; w += v  (rho = 0.9)             0.01
nesterov   gradient at the look-ahead point (rho = 0.9)      0.01
adagrad    steps shrink with the accumulated g^2             0.01
rmsprop    decaying average of g^2 (decay rho = 0.9)         0.001
adam       momentum + RMSProp + bias correction (0.9, 0.999) 0.003
adamw      Adam with decoupled weight decay                  0.003
lbfgs      full-batch quasi-Newton, a line search per step   (none)
=========  ===============================================  =========

``lbfgs`` is not a Keras optimizer: the trainer runs it over the whole training split (lbfgs.py).

Adam's 0.003 (not the paper's 0.001) is measured: on a small folder (186 training images, 8 epochs of 6
steps, with the cosine schedule) MobileNet v2 reaches 95-98% test accuracy over three seeds at 0.003 and
76-95% at 0.001, while LeNet-5 on digits (97.8%) and ResNet-20 (100%) are unchanged.
"""
import tf_keras as keras

from keras_cnns.errors import CnnkitError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "lbfgs")
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 1e-3, "adam": 3e-3,
              "adamw": 3e-3, "lbfgs": 1.0}  # lbfgs: no rate (its line search picks each step); recorded as 1
#: variables that weight decay never touches: biases and batch-norm scale/shift
NO_DECAY = ("bias", "beta", "gamma")


def make_optimizer(name, learning_rate, momentum=0.9, rho=0.9, beta_1=0.9, beta_2=0.999, weight_decay=0.0,
                   clipnorm=None, ema=None):
    """``ema``: also keep an exponential moving average of the weights with this decay, in the compiled step
    (Keras' ``use_ema``: average = ema * average + (1 - ema) * weight after every step, starting from the
    initial weights; see averaged_weights)."""
    name = str(name).lower()
    if name not in OPTIMIZERS:
        raise CnnkitError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    common = {"learning_rate": learning_rate, "clipnorm": clipnorm}
    if ema:
        common.update(use_ema=True, ema_momentum=ema)
    if name == "sgd":
        return keras.optimizers.SGD(**common)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(momentum=momentum, nesterov=name == "nesterov", **common)
    if name == "adagrad":
        return keras.optimizers.Adagrad(**common)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rho=rho, **common)
    if name == "adam":
        return keras.optimizers.Adam(beta_1=beta_1, beta_2=beta_2, **common)
    if name == "lbfgs":  # the model is compiled for its loss and metrics; lbfgs.py takes the steps
        return keras.optimizers.SGD(learning_rate=0.0)
    optimizer = keras.optimizers.AdamW(weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, **common)
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer


def averaged_weights(optimizer, variables):
    """The optimizer's moving average (--ema) of each of ``variables``, in their order. Keras keeps the averages
    as optimizer state (so BackupAndRestore saves them), indexed by variable, with no public accessor."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a loss-scale wrapper (float16)
    averages = optimizer._model_variables_moving_average
    return [averages[optimizer._index_dict[optimizer._var_key(v)]] for v in variables]


def _kernels(model):
    """Every convolution / dense kernel (never biases or batch-norm parameters), nested models included."""
    for layer in model.submodules:
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            weight = getattr(layer, attr, None)
            if weight is not None and getattr(weight, "trainable", False):
                yield weight


def add_weight_penalty(model, l1=0.0, l2=0.0):
    """Add l1 * sum|w| + l2 * sum w^2 over all kernels to the model's loss (elastic net when both).

    Returns the number of kernels penalised. Works on an already-built functional model.
    """
    import tensorflow as tf

    if l1 < 0 or l2 < 0:
        raise CnnkitError(f"regularisation strengths must be >= 0, got l1={l1}, l2={l2}")
    kernels = list(_kernels(model)) if (l1 or l2) else []
    for w in kernels:
        def penalty(w=w):
            v = tf.cast(w, tf.float32)
            total = tf.constant(0.0)
            if l1:
                total += l1 * tf.reduce_sum(tf.abs(v))
            if l2:
                total += l2 * tf.reduce_sum(tf.square(v))
            return total

        model.add_loss(penalty)
    return len(kernels)
