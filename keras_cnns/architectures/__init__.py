"""One module per family; importing this package registers every model (in the order of the notes)."""
# isort: off
from keras_cnns.architectures import lenet, alexnet, vgg, nin, googlenet  # noqa: F401
from keras_cnns.architectures import resnet, resnet_cifar, fractalnet, densenet  # noqa: F401
from keras_cnns.architectures import squeezenet, mobilenet, efficientnet  # noqa: F401
