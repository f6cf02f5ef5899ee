"""Pretrained ImageNet weights for the zoo: where each checkpoint comes from (``checkpoints``; the entries sit
beside their architectures, ``CHECKPOINTS`` in each family module), how it is fetched (``fetch``), read
(``readers``), and how its tensors map onto the zoo's layers (``mapping``).

A checkpoint comes from the published implementation whose parameter count the registry records for the
model (the zoo matches it tensor for tensor): a Keras Applications ``.h5`` (read with h5py) or a
torchvision ``.pth`` (read with PyTorch, the optional ``[torch]`` extra). Each entry records the URL, the
hash the source itself verifies with (Keras: the md5 in Keras Applications' code, where it has one;
torchvision: the sha256 prefix in the file name, torch.hub's rule), the ImageNet top-1 the source
publishes, the input preprocessing the weights expect, and the builder options that reproduce the
source's padding / layout (``padding="symmetric"`` and the like; they change no weight and no MAC).

Loading is strict: every weighted layer of the zoo model takes exactly the tensors of one source layer,
shapes checked; a missing, extra or misfitting tensor is a :class:`CnnkitError` naming it. Only the
classifier is left out, and said so, when the model has another class count or no top.

Caffe-style checkpoints (Keras' VGG) expect BGR input: the first convolution's input channels are
reversed at load time, so every zoo model takes RGB and the recorded preprocessing is in RGB order.
"""
import os

from keras_cnns.errors import CnnkitError
from keras_cnns.pretrained.checkpoints import (
    CAFFE,
    KERAS,
    PREPROCESSING,
    TF,
    TORCH,
    TORCHVISION,
    Checkpoint,
    find_checkpoint,
    imagenet_labels,
    keras_h5,
    torchvision_pth,
    why_none,
)
from keras_cnns.pretrained.fetch import cache_dir, fetch, hash_matches
from keras_cnns.pretrained.mapping import load_into
from keras_cnns.pretrained.readers import read_keras_h5, read_torch

__all__ = [
    "CAFFE",
    "KERAS",
    "PREPROCESSING",
    "TF",
    "TORCH",
    "TORCHVISION",
    "Checkpoint",
    "cache_dir",
    "fetch",
    "find_checkpoint",
    "hash_matches",
    "imagenet_labels",
    "keras_h5",
    "load_into",
    "read_keras_h5",
    "read_torch",
    "resolve",
    "torchvision_pth",
    "why_none",
]


def resolve(name, weights, options=None, input_shape=None):
    """(checkpoint, local file) for ``weights`` = "imagenet" or a file path; errors say what to do instead."""
    checkpoint = find_checkpoint(name, options, input_shape)
    if checkpoint is None:
        from keras_cnns.registry import get_model_info

        raise CnnkitError(f"{get_model_info(name).name} has no pretrained ImageNet weights ({why_none(name)}); use weights=None (--weights none) "
                          "or a cnnkit run to start from")
    if weights == "imagenet":
        return checkpoint, fetch(checkpoint)
    if not os.path.isfile(weights):
        raise CnnkitError(f"weights file {weights} does not exist (weights are 'imagenet', none or a file)")
    return checkpoint, weights
