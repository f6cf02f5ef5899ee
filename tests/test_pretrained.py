"""Pretrained ImageNet weights: every checkpoint's mapping proved against the reference implementation itself.

Real downloads cannot run here, so for every model with a checkpoint source the reference model is built
with random weights (Keras Applications with weights=None, torchvision with weights=None), its batch-norm
statistics randomised, saved in the source's own file format, loaded through cnnkit, and both models'
outputs compared on the same random images after each side's own preprocessing. The download path runs
against a local HTTP server.
"""
import hashlib
import http.server
import json
import logging
import os
import sys
import threading
import time
import types

import numpy as np
import pytest
import tf_keras as keras
from conftest import cnnkit_here, release_memory

import keras_cnns
from keras_cnns import pretrained
from keras_cnns.errors import CnnkitError
from keras_cnns.registry import list_models

apps = keras.applications

# zoo model -> (Keras Applications builder, its own preprocess_input or None = in the graph, test input side)
KERAS_REFERENCES = {
    "mobilenet": (apps.MobileNet, None, 96), "mobilenet_v2": (apps.MobileNetV2, None, 96),
    "vgg16": (apps.VGG16, apps.vgg16.preprocess_input, 224), "vgg19": (apps.VGG19, apps.vgg19.preprocess_input, 224),
    "preact_resnet50": (apps.ResNet50V2, None, 64), "preact_resnet101": (apps.ResNet101V2, None, 64),
    "preact_resnet152": (apps.ResNet152V2, None, 64),
    "densenet121": (apps.DenseNet121, apps.densenet.preprocess_input, 64),
    "densenet169": (apps.DenseNet169, apps.densenet.preprocess_input, 64),
    "densenet201": (apps.DenseNet201, apps.densenet.preprocess_input, 64),
    **{f"efficientnet_b{i}": (getattr(apps, f"EfficientNetB{i}"), None, 64) for i in range(8)},
}
MOBILENET_TF_PREPROCESS = {"mobilenet": apps.mobilenet.preprocess_input,
                           "mobilenet_v2": apps.mobilenet_v2.preprocess_input,
                           **{f"preact_resnet{d}": apps.resnet_v2.preprocess_input for d in (50, 101, 152)}}
TORCHVISION_MODELS = [n for n in list_models() if (c := pretrained.find_checkpoint(n)) and c.source == "torchvision"]


def test_every_checkpoint_model_is_proved_here_and_the_table_is_complete():
    with_checkpoint = {n for n in list_models() if pretrained.find_checkpoint(n)}
    assert with_checkpoint == set(KERAS_REFERENCES) | set(TORCHVISION_MODELS)
    assert len(with_checkpoint) == 36
    for name in with_checkpoint:
        c = pretrained.find_checkpoint(name)
        assert c.url.startswith("https://") and 40 < c.top1 < 90
        assert c.source == "torchvision" or c.file_hash is None or len(c.file_hash) == 32
        if c.source == "torchvision":  # torch.hub's rule: the file name carries the sha256 prefix
            assert c.filename.endswith(f"-{c.file_hash}.pth")
    assert pretrained.find_checkpoint("alexnet") is None and pretrained.find_checkpoint("lenet5") is None


def _randomise_keras(model, rng, calibration):
    """Random scales and shifts everywhere, then batch-norm statistics measured on ``calibration`` images (a
    network with its initial statistics answers nearly the same to every input, which would prove little)."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    new = []  # (variable, value), set in one call: layer by layer took seconds on EfficientNet-B7
    for layer in model.layers:
        if layer in norms:
            gamma, beta = layer.gamma, layer.beta
            new += [(gamma, rng.uniform(0.5, 1.5, gamma.shape)), (beta, rng.normal(0, 0.2, beta.shape))]
            layer.momentum = 0.0
        elif layer.weights and not isinstance(layer, keras.layers.Normalization):
            new += [(w, rng.normal(0, 0.05, w.shape)) for w in layer.weights if len(w.shape) == 1]
    keras.backend.batch_set_value(new)
    model(calibration, training=True)  # momentum 0: the moving statistics become this batch's
    for layer in norms:
        layer.momentum = 0.99
    variances = [layer.moving_variance for layer in norms]  # no near-zero variance to amplify round-off
    keras.backend.batch_set_value([(v, v.numpy() * rng.uniform(0.8, 1.2, v.shape) + 0.01) for v in variances])


def _normalised(x, preprocessing):
    x = np.asarray(x, np.float64)
    return (x * preprocessing["scale"] - np.asarray(preprocessing["mean"])) / np.asarray(preprocessing["std"])


def _images(seed, side, count=2):
    """Random images, dark and bright in turn: global pooling would make plain noise images look alike to
    the classifier."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, 120, (side, side, 3)) + (i % 2) * rng.uniform(0, 135)
                     for i in range(count)]).astype(np.float32)


def _assert_outputs_vary(out):
    # the images differ, so must the outputs, by far more than the tolerance: the comparison sees the input
    # side of the mapping too (channel order, flatten order, padding), not only the biases
    assert np.abs(out[0] - out[1]).max() > 1e-3 * np.abs(out).max()


@pytest.fixture
def float64(request):
    """Both sides in float64: round-off (which a sensitive 150-layer network amplifies past 1e-5 in float32)
    then stays near 1e-12, so any difference within the tolerance is a mapping error, not noise. Gives the
    float type the test runs in. VGG stays float32, at a 1e-4 tolerance: its 133-144M parameters in float64 on
    both sides took a test process to 6 GB, and 11-19 layers keep float32 round-off near 1e-6."""
    call = getattr(request.node, "callspec", None)
    if call and str(call.params.get("name", "")).startswith("vgg"):
        yield np.float32
        return
    keras.mixed_precision.set_global_policy("float64")
    keras.backend.set_floatx("float64")  # the Input layers too
    yield np.float64
    keras.backend.set_floatx("float32")
    keras.mixed_precision.set_global_policy("float32")


def _tolerance(dtype):
    return 1e-5 if dtype == np.float64 else 1e-4


@pytest.mark.parametrize("name", sorted(KERAS_REFERENCES))
def test_keras_applications_checkpoint_loads_layer_for_layer(name, tmp_path, float64):
    build, preprocess, side = KERAS_REFERENCES[name]
    rng = np.random.default_rng(0)
    reference = build(weights=None, input_shape=(side, side, 3), classifier_activation=None)
    if name.startswith("efficientnet"):  # what Keras sets in the graph with weights="imagenet" (keras#49930)
        norm = next(layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization))
        norm.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2, np.array(0)])
    preprocess = preprocess or MOBILENET_TF_PREPROCESS.get(name, lambda images: images)
    _randomise_keras(reference, rng, preprocess(_images(10, side, 6)))
    path = str(tmp_path / pretrained.find_checkpoint(name, None, (side, side, 3)).filename)
    reference.save_weights(path)
    x = _images(0, side)
    theirs = reference(preprocess(x.astype(float64)), training=False).numpy()
    del reference  # one model at a time
    release_memory()
    model = keras_cnns.create_model(name, input_shape=(side, side, 3), weights=path, classifier_activation=None)
    checkpoint = pretrained.find_checkpoint(name, None, (side, side, 3))
    ours = model(_normalised(x, checkpoint.preprocessing).astype(float64), training=False).numpy()
    assert np.abs(ours - theirs).max() <= _tolerance(float64) * max(1.0, np.abs(theirs).max())
    _assert_outputs_vary(theirs)


@pytest.mark.parametrize("name,alpha", [("mobilenet", 0.25), ("mobilenet", 0.5), ("mobilenet", 0.75),
                                        ("mobilenet_v2", 0.35), ("mobilenet_v2", 0.5), ("mobilenet_v2", 1.4)])
def test_every_published_mobilenet_width_loads(name, alpha, tmp_path, float64):
    build = KERAS_REFERENCES[name][0]
    reference = build(weights=None, input_shape=(128, 128, 3), alpha=alpha, classifier_activation=None)
    _randomise_keras(reference, np.random.default_rng(3), _images(10, 128, 6) / 127.5 - 1)
    checkpoint = pretrained.find_checkpoint(name, {"alpha": alpha}, (128, 128, 3))
    assert checkpoint.filename.endswith(("_128_tf.h5", "_128.h5")) and checkpoint.top1 != 0
    path = str(tmp_path / checkpoint.filename)
    reference.save_weights(path)
    model = keras_cnns.create_model(name, alpha=alpha, input_shape=128, weights=path, classifier_activation=None)
    x = _images(4, 128)
    theirs = reference(x.astype(np.float64) / 127.5 - 1, training=False).numpy()
    assert np.abs(model(_normalised(x, pretrained.TF)).numpy() - theirs).max() <= 1e-5 * max(1, np.abs(theirs).max())


def import_torchvision():
    """torchvision 0.28's wheel is built against PyTorch's CUDA build; with the CPU build its compiled
    detection ops (nms, roi_align) do not load and registering their meta kernels fails at import. The
    classification models are plain torch.nn modules that never call those ops, so that registration is
    skipped only in that case."""
    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        for module in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[module]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision
    return torchvision


def _torch_reference(name, tmp_path, side=64, dtype=np.float64):
    """torchvision's model with random scales and shifts and batch-norm statistics measured on random images
    (see _randomise_keras), saved as torchvision saves its checkpoints: the float32 state dict. The reference
    returned computes in ``dtype`` with exactly those float32 values."""
    import torch

    torch.manual_seed(0)
    reference = getattr(import_torchvision().models, name)(weights=None)
    calibration = _normalised(_images(10, side, 6), pretrained.TORCH).transpose(0, 3, 1, 2).astype(np.float32)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.momentum = 1.0  # the running statistics become the calibration batch's
        reference.train()(torch.from_numpy(calibration))
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # no near-zero variance to amplify round-off
                module.running_var.mul_(torch.empty_like(module.running_var).uniform_(0.8, 1.2)).add_(0.01)
    reference.eval()
    path = str(tmp_path / pretrained.find_checkpoint(name).filename)
    torch.save(reference.state_dict(), path)
    return reference.to(torch.float64 if dtype == np.float64 else torch.float32), path


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_checkpoint_loads_layer_for_layer(name, tmp_path, float64):
    import torch

    side = 224 if name.startswith("vgg") else 96 if name.startswith("squeezenet") else 64
    reference, path = _torch_reference(name, tmp_path, side, float64)
    x = _images(1, side)
    x = _normalised(x, pretrained.find_checkpoint(name).preprocessing).astype(float64)  # torchvision's transforms
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    del reference  # one model at a time
    release_memory()
    model = keras_cnns.create_model(name, input_shape=(side, side, 3), weights=path, classifier_activation=None)
    ours = model(x, training=False).numpy()
    assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
    _assert_outputs_vary(theirs)


def test_the_layout_options_are_what_makes_the_outputs_agree(tmp_path, float64):
    """The same tensors in the zoo's default layout (TensorFlow "same" padding) give other outputs: the
    checkpoint's padding is part of the model, which is why create_model builds it with the weights."""
    import torch

    reference, path = _torch_reference("resnet18", tmp_path)
    loaded = keras_cnns.create_model("resnet18", input_shape=(64, 64, 3), weights=path, classifier_activation=None)
    default = keras_cnns.create_model("resnet18", input_shape=(64, 64, 3), classifier_activation=None)
    default.set_weights(loaded.get_weights())  # same layers with weights, in the same order
    x = _normalised(_images(2, 64), pretrained.TORCH)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(loaded(x).numpy() - theirs).max() < 1e-4
    assert np.abs(default(x).numpy() - theirs).max() > 1e-2


# --- mismatches: clear errors, nothing half-loaded ---------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18_pth(tmp_path_factory):
    _, path = _torch_reference("resnet18", tmp_path_factory.mktemp("pth"))
    return path


def test_a_checkpoint_for_another_model_is_refused_naming_the_tensor(resnet18_pth):
    with pytest.raises(CnnkitError, match="has no tensors for resnet34's layer stage1_block3_1_conv"):
        keras_cnns.create_model("resnet34", weights=resnet18_pth)
    with pytest.raises(CnnkitError, match="conv1_conv.*kernel|kernel.*conv1_conv|has no tensors|another model"):
        keras_cnns.create_model("resnext50_32x4d", weights=resnet18_pth)


def test_a_torch_file_for_a_keras_sourced_model_says_which_file_it_needs(resnet18_pth):
    with pytest.raises(CnnkitError, match=r"Keras Applications: give a Keras \.h5 file as published"):
        keras_cnns.create_model("mobilenet_v2", weights=resnet18_pth)


def test_other_class_count_loads_everything_but_the_classifier_and_says_so(resnet18_pth, caplog):
    import torch

    state = torch.load(resnet18_pth, weights_only=True)
    with caplog.at_level(logging.WARNING, logger="keras_cnns"):
        model = keras_cnns.create_model("resnet18", num_classes=5, input_shape=(64, 64, 3), weights=resnet18_pth)
    assert "1000-class ImageNet classifier was not loaded" in caplog.text and "5 classes" in caplog.text
    np.testing.assert_allclose(model.get_layer("stage4_block2_2_conv").kernel.numpy(),
                               state["layer4.1.conv2.weight"].numpy().transpose(2, 3, 1, 0), rtol=1e-6)
    assert model.get_layer("fc").kernel.shape == (512, 5)
    features = keras_cnns.create_model("resnet18", include_top=False, input_shape=(64, 64, 3), weights=resnet18_pth)
    np.testing.assert_allclose(features.get_layer("conv1_bn").moving_variance.numpy(),
                               state["bn1.running_var"].numpy(), rtol=1e-6)


def test_a_layout_option_against_the_checkpoint_is_refused(resnet18_pth):
    with pytest.raises(CnnkitError, match="need padding='symmetric'"):
        keras_cnns.create_model("resnet18", weights=resnet18_pth, padding="same")


def test_missing_file_and_model_without_checkpoint_are_one_line_errors(tmp_path):
    with pytest.raises(CnnkitError, match="does not exist"):
        keras_cnns.create_model("resnet18", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(CnnkitError, match="alexnet has no pretrained ImageNet weights .*one-tower"):
        keras_cnns.create_model("alexnet", weights="imagenet")
    with pytest.raises(CnnkitError, match="alpha 0.25, 0.5, 0.75, 1.0, not 0.3"):
        keras_cnns.create_model("mobilenet", alpha=0.3, weights="imagenet")


def test_without_pytorch_a_pth_is_a_one_line_error(resnet18_pth, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CnnkitError, match=r'needs PyTorch: pip install -e "\.\[torch\]"'):
        keras_cnns.create_model("resnet18", weights=resnet18_pth)


def test_a_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "resnet18-f37072fd.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CnnkitError, match="not a readable PyTorch checkpoint"):
        keras_cnns.create_model("resnet18", weights=str(bad))
    bad_h5 = tmp_path / "x.h5"
    bad_h5.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    with pytest.raises(CnnkitError, match="not a Keras weights file"):
        keras_cnns.create_model("mobilenet", weights=str(bad_h5))


def test_imagenet_class_names_ship_with_the_package():
    names = pretrained.imagenet_labels()
    assert len(names) == 1000 and names[0] == "tench" and names[207] == "golden retriever"


# --- download: cache, hash, atomic write, offline ----------------------------------------------------------

class _Server:
    """A local HTTP server for checkpoint files; ``mode`` breaks the transfer on purpose."""

    def __init__(self, files):
        self.files, self.mode, self.requests = files, "ok", 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests += 1
                body = outer.files.get(self.path.rsplit("/", 1)[-1])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.mode in ("truncated", "stalled"):  # the connection drops, or hangs, halfway
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    if outer.mode == "stalled":
                        time.sleep(3)
                    self.close_connection = True
                    return
                self.wfile.write(body if outer.mode == "ok" else body[:-1] + bytes([body[-1] ^ 1]))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    server = _Server({})
    monkeypatch.setenv("CNNKIT_WEIGHTS_MIRROR", server.url)
    yield server
    server.close()


def _checkpoint(body, md5=True):
    digest = hashlib.md5(body).hexdigest() if md5 else hashlib.sha256(body).hexdigest()[:8]
    return pretrained.Checkpoint("resnet18", "torchvision", "https://example.invalid/models/w-x.pth", digest, None,
                                 "torch")


def _cached_files():
    folder = pretrained.cache_dir()
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_is_verified_cached_and_then_needs_no_network(mirror, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("keras_cnns"), "propagate", True)  # a CLI test run in-process stops it
    body = os.urandom(3_000_000)
    mirror.files["w-x.pth"] = body
    for md5 in (True, False):  # Keras' md5 and torch.hub's sha256 prefix
        checkpoint = _checkpoint(body, md5)
        with caplog.at_level(logging.INFO, logger="keras_cnns"):
            path = pretrained.fetch(checkpoint)
        assert "downloading w-x.pth: 100% of 3 MB" in caplog.text  # progress, through logging
        assert open(path, "rb").read() == body and _cached_files() == ["w-x.pth"]
        requests = mirror.requests
        mirror.close()  # offline now: the cache answers
        assert pretrained.fetch(checkpoint, progress=False) == path and mirror.requests == requests
        os.remove(path)
        mirror.__init__(mirror.files)
        os.environ["CNNKIT_WEIGHTS_MIRROR"] = mirror.url


@pytest.mark.parametrize("mode", ["corrupt", "truncated", "stalled"])
def test_a_bad_or_interrupted_download_leaves_no_file(mirror, mode):
    body = os.urandom(200_000)
    mirror.files["w-x.pth"] = body
    mirror.mode = mode
    with pytest.raises(CnnkitError, match="hash|cannot download"):
        pretrained.fetch(_checkpoint(body), progress=False, timeout=0.5)
    assert _cached_files() == []  # no partial file a later run could take for the checkpoint
    mirror.mode = "ok"
    assert open(pretrained.fetch(_checkpoint(body), progress=False), "rb").read() == body


def test_a_corrupt_cache_entry_is_downloaded_again(mirror):
    body = os.urandom(50_000)
    mirror.files["w-x.pth"] = body
    os.makedirs(pretrained.cache_dir())
    with open(os.path.join(pretrained.cache_dir(), "w-x.pth"), "wb") as f:
        f.write(body[:1000])
    assert open(pretrained.fetch(_checkpoint(body), progress=False), "rb").read() == body


def test_offline_with_nothing_cached_is_one_line_naming_the_url_and_the_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("CNNKIT_WEIGHTS_MIRROR", "http://127.0.0.1:9/models")  # nothing listens on port 9
    with pytest.raises(CnnkitError) as err:
        keras_cnns.create_model("mobilenet_v2", weights="imagenet")
    message = str(err.value)
    assert "\n" not in message and "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5" in message
    assert "--weights FILE" in message and "--weights none" in message
    assert os.listdir(tmp_path) in ([], ["weights"]) and not os.listdir(tmp_path / "weights")


def test_a_file_in_keras_own_cache_is_used(tmp_path, monkeypatch):
    """A user who ran Keras Applications before has the file under ~/.keras/models: no second download."""
    monkeypatch.setenv("CNNKIT_CACHE_DIR", str(tmp_path / "cnnkit"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("CNNKIT_WEIGHTS_MIRROR", "http://127.0.0.1:9/models")
    reference = apps.MobileNet(weights=None, input_shape=(128, 128, 3), alpha=0.25)
    os.makedirs(tmp_path / "keras" / "models")
    reference.save_weights(str(tmp_path / "keras" / "models" / "mobilenet_2_5_128_tf.h5"))
    model = keras_cnns.create_model("mobilenet", alpha=0.25, input_shape=128, weights="imagenet")
    np.testing.assert_array_equal(model.get_layer("block13_pw_conv").kernel.numpy(),
                                  reference.get_layer("conv_pw_13").kernel.numpy())


# --- the commands, offline against a local mirror --------------------------------------------------------

def _cli(*args, env=None, cwd=None):
    import subprocess

    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.fixture(scope="module")
def mobilenet_mirror(tmp_path_factory):
    """MobileNet's Keras Applications files (random weights, calibrated batch norm) on a local HTTP server,
    under the names Keras publishes them, for the 128 and the 224 input."""
    folder = tmp_path_factory.mktemp("mirror")
    reference = apps.MobileNet(weights=None, input_shape=(128, 128, 3))
    _randomise_keras(reference, np.random.default_rng(5), _images(11, 128, 6) / 127.5 - 1)
    reference.save_weights(str(folder / "w.h5"))
    body = (folder / "w.h5").read_bytes()
    server = _Server({"mobilenet_1_0_128_tf.h5": body, "mobilenet_1_0_224_tf.h5": body})
    yield server, {"CNNKIT_WEIGHTS_MIRROR": server.url, "CNNKIT_CACHE_DIR": str(folder / "cache"),
                   "KERAS_HOME": str(folder / "keras")}
    server.close()


def test_export_and_predict_use_imagenet_weights_by_default_and_say_so(mobilenet_mirror, tmp_path):
    from PIL import Image

    _, env = mobilenet_mirror
    out = _cli("export", "mobilenet", "--tflite", "--input-size", "128", "--json", "--output", str(tmp_path / "e"),
               env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ImageNet weights from Keras Applications (mobilenet_1_0_128_tf.h5, ImageNet top-1 64.4%)" in out.stderr
    report = json.loads(out.stdout)
    meta = json.loads((tmp_path / "e" / "mobilenet" / "1" / "export.json").read_text())
    assert meta["weights"]["source"] == "Keras Applications" and meta["weights"]["preprocessing"] == "tf"
    assert meta["preprocessing"] == pretrained.TF and meta["labels"] == pretrained.imagenet_labels()
    assert report["ok"] and "batch-norm statistics of" not in out.stderr  # trained statistics are kept
    Image.fromarray(_images(6, 160)[1].astype(np.uint8)).save(tmp_path / "photo.png")
    names = set(pretrained.imagenet_labels())
    for model in (str(tmp_path / "e" / "mobilenet"), str(tmp_path / "e" / "mobilenet" / "1" / "tflite" /
                                                              "model_float32.tflite"), "mobilenet"):
        out = cnnkit_here("predict", str(tmp_path / "photo.png"), "--model", model, "--top-k", "5", "--json", env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        prediction = json.loads(out.stdout)["predictions"][0]
        assert prediction["label"] in names and len(prediction["top"]) == 5
    out = cnnkit_here("predict", str(tmp_path / "photo.png"), "--model", "mobilenet", "--weights", "none", env=env)
    assert out.returncode == 0 and "class_" in out.stdout  # untrained: no ImageNet names


def test_models_lists_which_models_have_pretrained_weights():
    out = _cli("models", "--json")
    rows = {r["name"]: r for r in json.loads(out.stdout)["models"]}
    assert rows["resnet50"]["pretrained"] == {"source": "torchvision", "url": _TV + "resnet50-11ad3fa6.pth",
                                              "imagenet_top1": 80.858, "preprocessing": "torch"}
    assert rows["alexnet"]["pretrained"] is None and rows["vgg16"]["pretrained"]["preprocessing"] == "caffe"
    assert sum(r["pretrained"] is not None for r in rows.values()) == 36
    table = _cli("models", "--family", "densenet").stdout
    assert "75.0% Keras" in table and "densenet_bc100" in table


_TV = "https://download.pytorch.org/models/"


def test_finetune_from_imagenet_weights_trains_only_the_new_head(tmp_path, resnet18_pth):
    """`cnnkit finetune resnet18 --weights FILE --data ... --strategy head`: every layer but the new classifier
    keeps the checkpoint's weights, and the run normalises as the checkpoint expects."""
    import torch

    from keras_cnns.training import runs

    out = _cli("finetune", "resnet18", "--weights", resnet18_pth, "--data", "shapes:12", "--input-size", "64",
               "--strategy", "head", "--epochs", "1", "--batch-size", "8", "--output", str(tmp_path / "run"), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = types.SimpleNamespace(run_dir=json.loads(out.stdout)["run_dir"])
    config = runs.read_config(result.run_dir)
    assert config["preprocessing"] == pretrained.TORCH and config["train"]["finetune"]["weights"] == resnet18_pth
    model = runs.load_run_model(result.run_dir)
    state = torch.load(resnet18_pth, weights_only=True)
    np.testing.assert_allclose(model.get_layer("stage3_block1_1_conv").kernel.numpy(),
                               state["layer3.0.conv1.weight"].numpy().transpose(2, 3, 1, 0), rtol=1e-6)
    assert model.output_shape[-1] == len(runs.read_labels(result.run_dir))  # the new classes


def test_train_from_imagenet_weights_starts_from_the_checkpoint(tmp_path, resnet18_pth):
    from keras_cnns.training import TrainConfig, runs, train

    result = train(TrainConfig(model="resnet18", data="shapes:12", input_size=64, epochs=1, batch_size=8,
                               weights=resnet18_pth, lr=1e-12, output=str(tmp_path / "run")))
    config = runs.read_config(result.run_dir)
    assert config["preprocessing"] == pretrained.TORCH
    import torch

    state = torch.load(resnet18_pth, weights_only=True)
    model = runs.load_run_model(result.run_dir)
    np.testing.assert_allclose(model.get_layer("conv1_conv").kernel.numpy(),
                               state["conv1.weight"].numpy().transpose(2, 3, 1, 0), rtol=1e-5, atol=1e-6)


# --- the checkpoint table against the sources' own tables, shipped in the installed packages ---------------

def test_keras_checkpoints_match_keras_applications_own_urls_and_md5s():
    """Keras Applications' modules name each file and its md5 (WEIGHTS_HASHES, or file_hash= beside the URL):
    every Keras-sourced checkpoint of ours is the very same file."""
    import inspect

    from tf_keras.src.applications import densenet, efficientnet, resnet, vgg16, vgg19

    checked = 0
    for name in sorted(KERAS_REFERENCES):
        c = pretrained.find_checkpoint(name)
        if name.startswith("efficientnet_"):
            variant = name.rsplit("_", 1)[1]
            assert c.url == f"{efficientnet.BASE_WEIGHTS_PATH}efficientnet{variant}.h5"
            assert c.file_hash == efficientnet.WEIGHTS_HASHES[variant][0]
        elif name.startswith("preact_resnet"):
            model = f"resnet{name[len('preact_resnet'):]}v2"
            assert c.url == f"{resnet.BASE_WEIGHTS_PATH}{model}_weights_tf_dim_ordering_tf_kernels.h5"
            assert c.file_hash == resnet.WEIGHTS_HASHES[model][0]
        elif name.startswith(("densenet", "vgg")):
            module = {"vgg16": vgg16, "vgg19": vgg19}.get(name, densenet)
            source = inspect.getsource(module)
            # the module names the file, and the md5 stands right after the file it checks
            filename = c.url.rsplit("/", 1)[1]
            assert c.url.startswith("https://storage.googleapis.com/tensorflow/keras-applications/")
            after = source.split(filename.replace("_weights_tf_dim_ordering_tf_kernels.h5", ""), 1)
            assert len(after) == 2 and c.file_hash in source, name
        else:  # MobileNets: Keras publishes no hash for them
            assert c.file_hash is None and name.startswith("mobilenet")
            continue
        checked += 1
    assert checked == 16


def test_torchvision_checkpoints_match_torchvisions_weight_enums():
    """torchvision's weight enums (DEFAULT) give each file's URL and its published ImageNet top-1."""
    models = import_torchvision().models
    for name in TORCHVISION_MODELS:
        c = pretrained.find_checkpoint(name)
        weights = models.get_model_weights(name).DEFAULT
        assert c.url == weights.url, name
        assert c.top1 == pytest.approx(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]), name


# --- a checkpoint that does not fit is refused whole ----------------------------------------------------------

def _unchanged_after(load, model):
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(CnnkitError) as err:
        load()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # nothing was set
    return str(err.value)


def test_a_checkpoint_with_extra_tensors_or_for_a_deeper_model_is_refused(resnet18_pth, tmp_path):
    import torch

    model = keras_cnns.create_model("resnet18")
    checkpoint = pretrained.find_checkpoint("resnet18")
    state = torch.load(resnet18_pth, weights_only=True)
    state["layer5.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)  # one tensor the model has no layer for
    extra = str(tmp_path / "extra-f37072fd.pth")
    torch.save(state, extra)
    message = _unchanged_after(lambda: pretrained.load_into(model, checkpoint, extra), model)
    assert "resnet18" in message and "layer5.0" in message  # the tensor it cannot place, named
    deeper = str(tmp_path / "resnet34-b627a593.pth")  # resnet34's tensors hold resnet18's and more
    torch.save(import_torchvision().models.resnet34(weights=None).state_dict(), deeper)
    message = _unchanged_after(lambda: pretrained.load_into(model, checkpoint, deeper), model)
    assert "resnet18" in message and "deeper" in message


def test_a_truncated_checkpoint_is_refused(resnet18_pth, tmp_path):
    truncated = tmp_path / "resnet18-f37072fd.pth"
    truncated.write_bytes(open(resnet18_pth, "rb").read()[:200_000])
    model = keras_cnns.create_model("resnet18")
    message = _unchanged_after(lambda: pretrained.load_into(model, pretrained.find_checkpoint("resnet18"),
                                                            str(truncated)), model)
    assert "not a readable PyTorch checkpoint" in message
