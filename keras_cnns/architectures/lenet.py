"""LeNet-5 (LeCun, Bottou, Bengio, Haffner: Gradient-Based Learning Applied to Document Recognition, 1998).

conv(6, 5x5) -> pool -> conv(16, 5x5) -> pool -> conv(120, 5x5) -> FC 84 -> FC classes. Height and
width shrink (32 -> 28 -> 14 -> 10 -> 5 -> 1) while the channel count grows. Subsampling is average
pooling, the activation tanh as in the paper; C3 is fully connected to S2 (the modern form; the
paper's sparse connection table is a hardware-era detail). 61,706 parameters for 10 classes.
"""
import tf_keras as keras

from keras_cnns.architectures._blocks import dense_head, feature_pooling, image_input
from keras_cnns.registry import register

layers = keras.layers


def lenet5(num_classes=10, input_shape=(32, 32, 1), include_top=True, activation="tanh", pooling=None,
           classifier_activation="softmax"):
    inputs = image_input(input_shape, min_size=28)
    x = inputs
    if min(input_shape[:2]) < 32:  # MNIST-size input: pad to 32x32 as the paper did
        pad = 32 - min(input_shape[:2])
        x = layers.ZeroPadding2D(((pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)), name="pad")(x)
    x = layers.Conv2D(6, 5, name="c1_conv")(x)
    x = layers.Activation(activation, name=f"c1_{activation}")(x)
    x = layers.AveragePooling2D(2, name="s2_pool")(x)
    x = layers.Conv2D(16, 5, name="c3_conv")(x)
    x = layers.Activation(activation, name=f"c3_{activation}")(x)
    x = layers.AveragePooling2D(2, name="s4_pool")(x)
    x = layers.Conv2D(120, 5, name="c5_conv")(x)
    x = layers.Activation(activation, name=f"c5_{activation}")(x)
    if not include_top:
        return keras.Model(inputs, feature_pooling(x, pooling))
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(84, name="f6")(x)
    x = layers.Activation(activation, name=f"f6_{activation}")(x)
    return keras.Model(inputs, dense_head(x, num_classes, classifier_activation, name="output"))


register(
    "lenet5", lenet5, family="lenet", year=1998,
    paper="LeCun et al., Gradient-Based Learning Applied to Document Recognition",
    input_shape=(32, 32, 1), num_classes=10, reference_params=61_706,
    reference="LeNet-5 with a fully connected C3 (the paper's sparse C3 table gives ~60k)",
    description="conv-pool-conv-pool-FC-FC digit recogniser",
)
