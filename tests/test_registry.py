import pytest

import keras_cnns
from keras_cnns import CnnkitError, UnknownModelError, create_model, get_model_info, list_families, list_models

# every family the source notes name (SEEDS.md "Architectures")
NOTES_FAMILIES = {"lenet", "alexnet", "vgg", "nin", "googlenet", "resnet", "preact_resnet", "wide_resnet", "resnext",
                  "stochastic_depth", "fractalnet", "densenet", "squeezenet", "mobilenet", "efficientnet"}


def test_every_family_of_the_notes_is_registered():
    assert NOTES_FAMILIES <= set(list_families())


def test_named_variants_exist():
    required = ["lenet5", "alexnet", "alexnet_1tower", "vgg11", "vgg11_lrn", "vgg13", "vgg16c", "vgg16", "vgg19",
                "nin", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "preact_resnet50",
                "wrn28_10", "wide_resnet50_2", "resnext50_32x4d", "resnet110_sd", "densenet121", "densenet169",
                "densenet201", "densenet_bc100", "squeezenet1_0", "squeezenet1_1", "mobilenet", "mobilenet_v2"]
    required += [f"efficientnet_b{i}" for i in range(8)]
    missing = [n for n in required if n not in list_models()]
    assert not missing


def test_metadata_is_complete():
    for name in list_models():
        info = get_model_info(name)
        assert info.paper and 1998 <= info.year <= 2019, name
        assert len(info.input_shape) == 3 and len(info.small_input_shape) == 3, name
        assert info.num_classes in (10, 1000), name
        if info.reference_params is not None:
            assert info.reference, f"{name} must say where its reference count comes from"


def test_lookup_is_forgiving_about_case_and_dashes():
    assert get_model_info("ResNet-18").name == "resnet18"
    assert list_models("vgg")[0] == "vgg11"


def test_unknown_model_names_close_matches():
    with pytest.raises(UnknownModelError) as err:
        create_model("resnet19")
    assert "resnet18" in err.value.suggestions
    assert "'resnet19'" in str(err.value) and "\n" not in str(err.value)


def test_unknown_model_without_any_close_match():
    with pytest.raises(UnknownModelError) as err:
        get_model_info("transformer-xxl")
    assert err.value.suggestions == []


def test_unknown_family_option_lists_the_allowed_ones():
    with pytest.raises(CnnkitError, match="no option wings.*alpha"):
        create_model("mobilenet", wings=2)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "ten"])
def test_bad_number_of_classes(bad):
    with pytest.raises(CnnkitError, match="num_classes"):
        create_model("lenet5", num_classes=bad)


@pytest.mark.parametrize("shape", [(32, 32, 3, 1), (0, 32, 3), (32.0, 32, 3)])
def test_bad_input_shape(shape):
    with pytest.raises(CnnkitError, match="input"):
        create_model("resnet18", input_shape=shape)


def test_too_small_input_is_a_clear_error():
    with pytest.raises(CnnkitError, match="too small"):
        create_model("vgg16", input_shape=(16, 16, 3))


def test_input_shape_shorthands():
    assert create_model("lenet5", input_shape=28).input_shape == (None, 28, 28, 1)
    assert create_model("resnet18", input_shape=(40, 48)).input_shape == (None, 40, 48, 3)
    assert create_model("resnet18", num_classes=7, input_shape=32).output_shape == (None, 7)


def test_model_is_named_after_registry_entry():
    assert create_model("squeezenet1_1", input_shape=32).name == "squeezenet1_1"


def test_package_exports():
    assert callable(keras_cnns.create_model) and callable(keras_cnns.inference_model)


def test_import_keras_cnns_alone_lets_tf_keras_load_a_saved_model_with_its_layers_and_schedules(tmp_path):
    import subprocess
    import sys

    import tf_keras

    from keras_cnns.training.schedules import build_schedule

    model = create_model("resnet20_cifar", num_classes=10, input_shape=(32, 32, 3))  # uses ZeroPadShortcut
    model.compile(tf_keras.optimizers.SGD(build_schedule("cosine", 0.1, 10, 3, warmup_epochs=1)), "mse")
    path = str(tmp_path / "best.keras")
    model.save(path)
    code = ("import sys, keras_cnns; assert 'tensorflow' not in sys.modules, 'import keras_cnns started TensorFlow'; "
            f"import tf_keras; m = tf_keras.models.load_model({path!r}); "
            "print(type(m.optimizer._learning_rate).__name__, "
            "sum(type(l).__name__ == 'ZeroPadShortcut' for l in m.layers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    schedule, shortcuts = out.stdout.split()
    assert schedule == "LinearWarmup" and int(shortcuts) == 2
