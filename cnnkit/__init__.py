"""cnnkit: the command line that wires keras_cnns, export and serving together."""
from keras_cnns import __version__  # noqa: F401
