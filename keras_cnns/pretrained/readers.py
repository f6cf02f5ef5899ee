"""Reading a checkpoint file: {source layer: {weight: array}} (Keras HDF5) or a PyTorch state dict."""
import os

import numpy as np

from keras_cnns.errors import CnnkitError


def read_keras_h5(path):
    """The layers of a Keras ``save_weights`` / ``save`` HDF5 file, in the file's order."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            layers = {}
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else layer
                names = [n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs["weight_names"]]
                if names:
                    layers[layer] = {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[layer][n]) for n in names}
            return layers
    except (OSError, KeyError) as err:
        raise CnnkitError(f"{path} is not a Keras weights file (HDF5 with layer_names): {err}") from None


def read_torch(path):
    """A PyTorch state dict as numpy arrays (batch-norm step counters dropped)."""
    try:
        import torch
    except ImportError:
        raise CnnkitError(f"reading the PyTorch checkpoint {os.path.basename(path)} needs PyTorch: "
                          "pip install -e \".[torch]\" (or pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CnnkitError(f"{path} is not a readable PyTorch checkpoint: {str(err).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CnnkitError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v.detach().numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
