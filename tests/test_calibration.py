"""Calibration: the expected calibration error and the temperature fit, on toys whose answer is known."""
import numpy as np
import pytest

from keras_cnns.errors import CnnkitError
from keras_cnns.training import calibration
from keras_cnns.training.evaluation import classification_metrics


def _two_class(confidences_and_accuracies, per_bin=100):
    """Images of two classes whose top-1 confidence is c, of which exactly a fraction a are right."""
    probabilities, labels = [], []
    for c, a in confidences_and_accuracies:
        right = int(round(a * per_bin))
        probabilities += [[c, 1 - c]] * per_bin
        labels += [0] * right + [1] * (per_bin - right)
    return np.array(probabilities), np.array(labels)


def test_a_perfectly_calibrated_model_has_zero_error():
    probabilities, labels = _two_class([(0.55, 0.55), (0.7, 0.7), (0.9, 0.9), (1.0, 1.0)])
    found = calibration.reliability(probabilities, labels)
    assert found["ece"] == pytest.approx(0.0, abs=1e-12)
    assert [b["images"] for b in found["bins"]] == [100] * 4
    assert [b["accuracy"] for b in found["bins"]] == pytest.approx([b["confidence"] for b in found["bins"]])


def test_the_error_is_the_image_weighted_gap_between_confidence_and_accuracy():
    probabilities, labels = _two_class([(0.9, 0.6), (0.6, 0.6)])  # one bin 30 points over-confident, one exact
    assert calibration.reliability(probabilities, labels)["ece"] == pytest.approx(0.15)
    # a confidence on a bin edge belongs to the bin below it: (13/15, 14/15]
    edge = calibration.reliability(np.array([[14 / 15, 1 / 15]]), np.array([0]))["bins"]
    assert edge[0]["high"] == pytest.approx(14 / 15)
    assert classification_metrics(probabilities, labels, ["a", "b"])["ece"] == pytest.approx(0.15)


def _generated(n, rng, classes=5):
    """Logits and labels drawn from the softmax of those logits: the softmax is calibrated by construction."""
    logits = rng.normal(0, 2.0, (n, classes))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return p, labels


def test_the_temperature_fit_undoes_over_confidence_and_never_changes_the_prediction():
    rng = np.random.default_rng(0)
    p, labels = _generated(4000, rng)
    over = calibration.temperature_scaled(p, 1 / 3)  # logits times 3: an over-confident model
    fit_p, fit_labels = over[:2000], labels[:2000]  # fitted on one half (the "validation split")
    temperature = calibration.fit_temperature(fit_p, fit_labels)
    assert temperature == pytest.approx(3.0, rel=0.15)
    held_out, held_labels = over[2000:], labels[2000:]
    before = calibration.reliability(held_out, held_labels)["ece"]
    after = calibration.reliability(calibration.temperature_scaled(held_out, temperature), held_labels)["ece"]
    assert before > 0.1 and after < before / 3
    np.testing.assert_array_equal(calibration.temperature_scaled(held_out, temperature).argmax(1),
                                  held_out.argmax(1))
    # and a calibrated model is left nearly alone
    assert calibration.fit_temperature(p[:2000], labels[:2000]) == pytest.approx(1.0, rel=0.15)


def test_temperature_one_is_the_identity_and_rows_stay_probabilities():
    p = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    np.testing.assert_allclose(calibration.temperature_scaled(p, 1.0), p, atol=1e-12)
    softer = calibration.temperature_scaled(p, 2.0)
    np.testing.assert_allclose(softer.sum(1), 1.0)
    assert (softer.max(1) < p.max(1)).all()


def _toy(head):
    """A small convolutional model with one of the heads the zoo uses."""
    import tf_keras as keras

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    if head == "dense":  # LeNet, VGG, ResNet: a Dense layer with the softmax
        outputs = layers.Dense(5, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    elif head == "conv":  # SqueezeNet, NiN: convolution, ReLU, average pooling, then the softmax
        x = layers.ReLU()(layers.Conv2D(5, 1)(x))
        outputs = layers.Softmax()(layers.Dropout(0.5)(layers.GlobalAveragePooling2D()(x)))
    elif head == "batch-norm":  # a batch norm between the logits and the softmax: its shift does not scale
        x = layers.BatchNormalization(beta_initializer="ones")(layers.Conv2D(5, 1)(x))
        outputs = layers.Activation("softmax")(layers.GlobalAveragePooling2D()(x))
    else:
        outputs = layers.Dense(5, activation="sigmoid")(layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("head", ["dense", "conv"])
def test_a_temperature_folds_into_the_last_weights_exactly(head):
    model = _toy(head)
    x = np.random.RandomState(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    before = model(x).numpy()
    calibration.apply_temperature(model, 2.5)
    after = model(x).numpy()
    np.testing.assert_allclose(after, calibration.temperature_scaled(before, 2.5), rtol=1e-4, atol=1e-6)
    assert after.max() < before.max()  # softer, and the same answers
    np.testing.assert_array_equal(after.argmax(1), before.argmax(1))


@pytest.mark.parametrize("head, message", [("batch-norm", "batch_normalization is in between"),
                                           ("sigmoid", "does not end in a softmax")])
def test_a_head_a_temperature_cannot_fold_into_is_refused(head, message):
    model = _toy(head)
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(CnnkitError, match=message):
        calibration.apply_temperature(model, 2.0)
    for kept, w in zip(weights, model.get_weights()):  # nothing changed
        np.testing.assert_array_equal(kept, w)


def test_no_temperature_is_fitted_on_too_few_or_all_right_validation_images():
    from keras_cnns.training.calibration import MIN_TEMPERATURE_IMAGES, temperature_refusal

    right = np.array([[0.9, 0.1], [0.2, 0.8]] * 25)  # 50 images, every answer right
    labels = np.array([0, 1] * 25)
    assert MIN_TEMPERATURE_IMAGES == 50
    assert temperature_refusal(right[:49], labels[:49]) == ("only 49 validation images (a temperature needs at least "
                                                           "50): its value would be chance")
    assert temperature_refusal(right, labels) == ("every one of the 50 validation images is answered right: the fit "
                                                  "would sharpen the probabilities without bound")
    one_wrong = right.copy()
    one_wrong[0] = [0.3, 0.7]
    assert temperature_refusal(one_wrong, labels) is None
