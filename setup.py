"""cnnkit: classic CNN architectures from definition to deployment (TensorFlow / tf_keras)."""
from setuptools import find_packages, setup

VERSION = "0.1.0"

setup(
    name="cnnkit",
    version=VERSION,
    description="Classic CNN architectures from definition to deployment: model zoo, "
    "training, export (SavedModel/TFLite/ONNX) and serving on TensorFlow.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_cnns*", "export*", "serving*", "cnnkit*"]),
    package_data={"keras_cnns": ["zoo_stats.json", "imagenet_classes.txt"], "serving": ["container/Dockerfile", "web/index.html"]},
    install_requires=[
        # tf_keras (Keras 2) is the Keras API: tensorflow-model-optimization rejects Keras 3 models.
        "tensorflow==2.21.*",
        "tf-keras==2.21.*",
        "tensorboard==2.21.*",  # the TensorBoard callback (TF 2.21 no longer pulls it in)
        "tensorflow-model-optimization>=0.8.1,<0.9",
        "tf2onnx==1.17.*",
        "onnx>=1.16",
        "onnxruntime>=1.20",
        "onnxconverter-common==1.16.*",  # ONNX float16 (convert_float_to_float16)
        "ai-edge-litert>=2.0",
        "tensorflow-serving-api==2.21.*",  # TF Serving's protos and gRPC stubs
        "grpcio>=1.60",
        "prometheus-client>=0.20",  # the embedded server's metrics, in TF Serving's names
        "tornado>=6.4",  # the embedded server's REST front end: event-driven HTTP/1.1 (serving/front.py)
        "pyyaml>=6",  # the docker-compose and Kubernetes files `cnnkit serve --emit-config` writes
        "requests>=2.31",  # the REST client
        "click>=8.1",
        "numpy>=1.26",
        "scikit-learn>=1.4",  # only for its bundled 8x8 digits data set (no download)
        "matplotlib>=3.8",
        "pillow>=10",
        "h5py>=3.10",  # reads Keras Applications' pretrained .h5 checkpoints
    ],
    extras_require={
        # PyTorch (CPU build): reads torchvision's pretrained .pth checkpoints (--weights imagenet for ResNet,
        # VGG-BN, SqueezeNet...), and runs the static-vs-dynamic benchmark (benchmarks/static_vs_dynamic.py)
        "torch": ["torch==2.13.0"],
        "bench": ["torch==2.13.0"],
        # OpenVINO: a runtime for the export's IR (cnnkit export --openvino, predict --runtime openvino), and NNCF,
        # its post-training int8 quantizer (the openvino-int8 format)
        "openvino": ["openvino==2026.4.*", "nncf==3.4.*"],
        # the tests check the PyTorch twins of the Keras models, and every checkpoint mapping against
        # torchvision's own models
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff==0.17.6", "torch==2.13.0", "torchvision==0.28.0",
                "openvino==2026.4.*", "nncf==3.4.*",
                # mutation testing of the logic modules (tools/mutation.py)
                "mutmut==3.8.*",
                # drives Debian's chromium (apt-get install chromium) in the model page's tests; no browser download
                "playwright>=1.50"],
    },
    entry_points={"console_scripts": ["cnnkit=cnnkit.cli:main"]},
)
