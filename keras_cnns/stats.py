"""The zoo table: params, MACs and activation memory of every model at its canonical input.

Building all ~60 models takes minutes, so the table ships with the package (``zoo_stats.json``)
and ``cnnkit models`` reads it instantly. The test suite rebuilds every model and fails if the
table is stale; regenerate it with ``python -m keras_cnns.stats``.
"""
import functools
import json
import os

STATS_FILE = os.path.join(os.path.dirname(__file__), "zoo_stats.json")


def model_stats(name):
    """Build ``name`` (inference form, canonical input) and measure it: a small JSON-able dict."""
    import tf_keras as keras

    from keras_cnns.analysis import profile_model
    from keras_cnns.registry import create_model
    from keras_cnns.utils import inference_model

    keras.backend.clear_session()
    return profile_model(inference_model(create_model(name))).totals()


@functools.lru_cache(maxsize=1)
def load_zoo_stats():
    """{model name: stats} as shipped; models missing from the file are simply absent."""
    if not os.path.exists(STATS_FILE):
        return {}
    with open(STATS_FILE, encoding="utf-8") as f:
        return json.load(f)


def zoo_stats(name):
    """The shipped stats of ``name``, measured afresh if the table does not have it."""
    return load_zoo_stats().get(name) or model_stats(name)


def write_zoo_stats(path=STATS_FILE, log=None):
    from keras_cnns.files import replaced_atomically
    from keras_cnns.registry import list_models

    table = {}
    for name in list_models():
        table[name] = model_stats(name)
        if log:
            log(f"{name}: {table[name]['params']:,} params, {table[name]['macs']:,} MACs")
    with replaced_atomically(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    load_zoo_stats.cache_clear()
    return table


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_zoo_stats(log=logging.getLogger("keras_cnns.stats").info)
