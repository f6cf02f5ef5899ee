"""``--precision auto``: mixed bfloat16 where it trains faster, float32 elsewhere.

Measured (benchmarks/precision.py, RESULTS.md; issue 24), Keras graph, batch 64 at 32x32, float32 -> mixed
bfloat16: ResNet-18 1.2-1.3x and ResNet-20 1.2-1.4x on a CPU with AVX512-BF16 (no AMX), ResNet-18 2.2x with
AMX; MobileNet v2 0.7-0.8x and 0.98x - its depthwise convolutions are memory-bound, and bfloat16 adds casts
without making them faster. So ``auto`` computes in bfloat16 (weights, and the exported model, stay float32)
when the CPU has bfloat16 arithmetic and the model has no depthwise convolution; float32 otherwise.
"""
#: CPU flags (Linux /proc/cpuinfo names) that give bfloat16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CHOICES = ("auto", "float32", "mixed_float16", "float16", "mixed_bfloat16", "bfloat16")
POLICIES = {"float32": "float32", "mixed_float16": "mixed_float16", "float16": "mixed_float16",
            "mixed_bfloat16": "mixed_bfloat16", "bfloat16": "mixed_bfloat16"}
DEPTHWISE_WHY = ("the model has depthwise convolutions, which train no faster in bfloat16 (MobileNet v2: 0.7-0.8x "
                 "with AVX512-BF16, 0.98x with AMX)")


def cpu_flags():
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve(requested, gpus=()):
    """(Keras dtype policy, why) for ``--precision requested``, before the model is built (see ``for_model``)."""
    if requested != "auto":
        return POLICIES[requested], f"--precision {requested}"
    if gpus:
        return "float32", "auto chooses for CPUs; on a GPU ask for --precision mixed_float16"
    found = [f for f in BF16_FLAGS if f in cpu_flags()]
    if not found:
        return "float32", "this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX)"
    return "mixed_bfloat16", (f"this CPU has {' and '.join(found)}: ResNet-18 trains 1.2-1.3x (AVX512-BF16) to "
                              "2.2x (AMX) faster in bfloat16; weights and the exported model stay float32")


def for_model(requested, policy, why, model):
    """``auto``'s second look, at the built model: float32 for one with depthwise convolutions, and for one whose
    layers came from a saved float32 model (fine-tuning a run or a file: they keep the dtype they were saved with)."""
    if requested != "auto" or policy == "float32":
        return policy, why
    import tf_keras as keras

    layers = [layer for layer in model.submodules if isinstance(layer, keras.layers.Layer)]
    if any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in layers):
        return "float32", DEPTHWISE_WHY
    if not any(layer.compute_dtype == "bfloat16" for layer in layers if layer.weights):
        return "float32", "its layers come from a saved float32 model and keep that arithmetic"
    return policy, why
