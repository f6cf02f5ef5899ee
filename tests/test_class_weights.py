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


def test_a_class_with_no_training_images_keeps_its_place_and_the_imbalance_counts_it():
    # a: 4 images, b: 2, c: none (the last class: np.bincount alone would drop it). Hand-computed: 6 images /
    # (3 classes x max(count, 1)) = 0.5, 1.0, 2.0; the imbalance is 4 / max(0, 1) = 4.0x, beyond auto's 3x
    labels = [0, 0, 0, 0, 1, 1]
    np.testing.assert_allclose(class_weights.balanced(labels, 3), [0.5, 1.0, 2.0])
    plan = class_weights.resolve("auto", labels, NAMES)
    assert plan == {"requested": "auto", "weights": {"a": 0.5, "b": 1.0, "c": 2.0},
                    "why": "balanced (inverse frequency): the largest class has 4.0x the training images of the "
                           "smallest"}
    np.testing.assert_array_equal(class_weights.as_array(plan, NAMES), np.array([0.5, 1.0, 2.0], np.float32))
    assert class_weights.as_array(plan, NAMES).dtype == np.float32
    assert class_weights.as_array(plan, ["c", "a", "b"]).tolist() == [2.0, 0.5, 1.0]  # in the order asked
    # labels read as floats (an .npz of float labels) count as their classes
    np.testing.assert_allclose(class_weights.balanced(np.array(labels, np.float32), 3), [0.5, 1.0, 2.0])
    assert class_weights.resolve("auto", np.array(labels, np.float64), NAMES)["weights"] == plan["weights"]


def test_weights_are_rounded_to_six_decimals_and_none_says_it_was_asked():
    plan = class_weights.resolve("balanced", [0, 0, 0, 1], ["a", "b"])  # 4 / (2 x 3) = 0.666667, 4 / (2 x 1) = 2
    assert plan == {"requested": "balanced", "weights": {"a": 0.666667, "b": 2.0},
                    "why": "balanced (inverse frequency): the largest class has 3.0x the training images of the "
                           "smallest"}
    plan = class_weights.resolve("none", _labels(60, 10, 30), NAMES)
    assert plan == {"requested": "none", "weights": None,
                    "why": "the largest class has 6.0x the training images of the smallest; --class-weight none"}
    assert class_weights.as_array(plan, NAMES) is None


def test_check_keeps_each_choice_and_makes_a_file_path_absolute(tmp_path, monkeypatch):
    for choice in class_weights.CHOICES:
        assert class_weights.check(choice) == choice
    (tmp_path / "w.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert class_weights.check("w.json") == str(tmp_path / "w.json")


def test_a_weight_file_error_names_every_unknown_and_missing_class_and_refuses_infinity(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"a": 1, "x": 1, "y": 2}))
    with pytest.raises(CnnkitError) as refused:
        class_weights.resolve(str(path), _labels(5, 5, 5), NAMES)
    assert str(refused.value) == f"{path}: no class named x, y; no weight for b, c (the classes: a, b, c)"
    path.write_text('{"a": 1, "b": Infinity, "c": 1}')  # Python's JSON reader takes Infinity
    with pytest.raises(CnnkitError, match="the weight of b must be a number >= 0, got inf"):
        class_weights.resolve(str(path), _labels(5, 5, 5), NAMES)
