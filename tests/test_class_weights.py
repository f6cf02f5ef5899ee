"""Class weights: the balanced rule, when auto applies it, weight files, and the weights the pipeline yields."""
import json

import numpy as np
import pytest

from keras_cnns.data import load_data, make_dataset
from keras_cnns.errors import CnnkitError
from keras_cnns.training import class_weights

NAMES = ["a", "b", "c"]


def _labels(*counts):
    return np.concatenate([np.full(n, i) for i, n in enumerate(counts)])


def test_balanced_weights_make_every_class_weigh_the_same_and_average_to_one():
    labels = _labels(60, 10, 30)
    weights = class_weights.balanced(labels, 3)
    np.testing.assert_allclose(weights, [100 / 180, 100 / 30, 100 / 90])
    np.testing.assert_allclose(weights * np.bincount(labels), [100 / 3] * 3)  # each class's total weight
    assert weights[labels].mean() == pytest.approx(1.0)


def test_auto_weighs_only_an_imbalanced_split_and_says_why():
    plan = class_weights.resolve("auto", _labels(60, 10, 30), NAMES)
    assert plan["weights"] == pytest.approx({"a": 100 / 180, "b": 100 / 30, "c": 100 / 90}, rel=1e-5)
    assert "6.0x" in plan["why"] and plan["why"].startswith("balanced")
    plan = class_weights.resolve("auto", _labels(30, 10, 30), NAMES)  # 3.0x: not beyond the ratio
    assert plan["weights"] is None and "3.0x" in plan["why"] and "beyond 3x" in plan["why"]
    assert class_weights.resolve("none", _labels(60, 10, 30), NAMES)["weights"] is None
    assert class_weights.resolve("balanced", _labels(10, 10, 10), NAMES)["weights"] == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_a_weight_file_names_every_class_and_is_checked(tmp_path):
    def plan(content):
        path = tmp_path / "w.json"
        path.write_text(json.dumps(content) if not isinstance(content, str) else content)
        return class_weights.resolve(class_weights.check(str(path)), _labels(5, 5, 5), NAMES)

    assert plan({"a": 1, "b": 4.5, "c": 0})["weights"] == {"a": 1.0, "b": 4.5, "c": 0.0}
    for content, message in (({"a": 1, "b": 1}, "no weight for c"), ({"a": 1, "b": 1, "c": 1, "d": 2}, "no class "
                             "named d"), ({"a": 1, "b": -1, "c": 1}, "the weight of b must be a number >= 0"),
                             ({"a": "x", "b": 1, "c": 1}, "the weight of a"), ({"a": 0, "b": 0, "c": 0}, "every "
                             "weight is 0"), ("[1, 2, 3]", "one JSON object"), ("{not json", "cannot read")):
        with pytest.raises(CnnkitError, match=message):
            plan(content)
    with pytest.raises(CnnkitError, match="auto, balanced, none or a JSON file"):
        class_weights.check("balance")


def test_the_training_pipeline_yields_each_images_class_weight(tmp_path):
    digits = load_data("digits", (12, 12, 1))
    keep = np.isin(digits.test.y, [0, 1, 2])
    np.savez(tmp_path / "d.npz", x=digits.test.x[keep][..., 0], y=digits.test.y[keep], class_names=NAMES)
    data = load_data(str(tmp_path / "d.npz"), (12, 12, 1))
    weights = np.array([0.5, 2.0, 3.0], np.float32)
    seen = 0
    for _, target, weight in make_dataset(data, "train", 8, {"scale": 1 / 255, "mean": [0.0], "std": [1.0]},
                                          training=True, class_weights=weights):
        np.testing.assert_array_equal(weight.numpy(), weights[target.numpy().argmax(1)])
        seen += len(weight)
    assert seen == len(data.train)
