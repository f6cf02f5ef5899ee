"""Small helpers on built models."""


def inference_model(model):
    """The model with training-only outputs removed (GoogLeNet's auxiliary classifiers).

    The first output is the main classifier; the returned model shares the weights of ``model``.
    """
    if len(model.outputs) == 1:
        return model
    import tf_keras as keras

    return keras.Model(model.inputs, model.outputs[0], name=model.name)
