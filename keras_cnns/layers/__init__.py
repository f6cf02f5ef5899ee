"""Custom layers the source notes name, usable in any tf_keras model.

Every layer is registered as Keras-serializable, so models that use them save and load, and every
training-only behaviour has a deterministic inference form (no random ops when ``training=False``).
"""
from keras_cnns.layers.fractal import FractalJoin, FractalPathSampler
from keras_cnns.layers.normalization import LocalResponseNormalization
from keras_cnns.layers.pooling import FractionalMaxPooling2D, fractional_pooling_boundaries
from keras_cnns.layers.shortcut import ZeroPadShortcut
from keras_cnns.layers.stochastic import (
    DropConnectConv2D,
    DropConnectDense,
    DropPath,
    StochasticDepth,
)

__all__ = [
    "LocalResponseNormalization",
    "StochasticDepth",
    "DropPath",
    "DropConnectDense",
    "DropConnectConv2D",
    "FractionalMaxPooling2D",
    "fractional_pooling_boundaries",
    "FractalJoin",
    "FractalPathSampler",
    "ZeroPadShortcut",
]
