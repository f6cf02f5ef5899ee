"""The models a server serves: ``BASE/NAME/VERSION`` SavedModels, loaded, watched and retired.

The layout is TF Serving's (and what ``cnnkit export`` writes). ``BASE`` is either a folder of model
folders (every model is served) or one model folder of numbered versions. The newest
``keep_versions`` versions of each model are loaded; a request names a version or gets the newest.
A watcher rescans every ``poll_seconds``: a new version directory is loaded and then published, a
removed one is retired. A request holds its own reference to the version it got, so a version
retired mid-request still answers it.

Request names never become paths: a model or version is looked up among what the scan found, so
nothing outside ``BASE`` can be addressed.
"""
import logging
import os
import re
import threading

import numpy as np

from export.savedmodel import IMAGE_FEATURE, op_error_message
from serving.batching import Batcher
from serving.errors import ServingError, invalid, not_found

log = logging.getLogger("serving")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
INIT_OP = "__saved_model_init_op"


def read_signature_defs(path):
    """{name: SignatureDef proto} from ``saved_model.pb`` (what GetModelMetadata returns)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return dict(saved.meta_graphs[0].signature_def)


def _coerce(name, value, spec):
    """``value`` (nested lists, bytes, or an array) as an array of ``spec``'s dtype and shape, or a clear error."""
    dtype = spec.dtype
    if dtype.name == "string":
        array = np.asarray(value, dtype=object)
        if array.size and not all(isinstance(v, bytes) for v in array.flat):
            raise invalid(f"input '{name}' takes binary strings (send {{\"b64\": ...}} for each image)")
    else:
        try:
            array = np.asarray(value)
        except ValueError:
            raise invalid(f"input '{name}' is ragged: every instance must have the same shape") from None
        if array.dtype == object or array.dtype.kind in "USb":
            raise invalid(f"input '{name}' must be numbers of type {dtype.name}, with every instance the same "
                          "shape") from None
        target = dtype.as_numpy_dtype
        if np.issubdtype(target, np.integer) and array.size:
            info = np.iinfo(target)
            if array.dtype.kind == "f" and not np.all(np.equal(np.mod(array, 1), 0)):
                raise invalid(f"input '{name}' must be integers ({dtype.name}), got fractional values")
            if array.min() < info.min or array.max() > info.max:
                raise invalid(f"input '{name}' has values outside the range of {dtype.name} "
                              f"[{info.min}, {info.max}]")
        array = array.astype(target)
    if not spec.shape.is_compatible_with(array.shape):
        want = "[" + ", ".join("?" if d is None else str(d) for d in spec.shape.as_list()) + "]"
        raise invalid(f"input '{name}' has shape {list(array.shape)} but the signature takes {want} "
                      "(the first axis is the batch)")
    return array


class Servable:
    """One loaded version of one model: its signatures, callable from many threads."""

    def __init__(self, name, version, path, batching=None, on_batch=None, runtime="auto", budget=None):
        import tensorflow as tf

        from serving.runtime import open_fastest

        self.name, self.version, self.path = name, version, path
        self.signature_defs = read_signature_defs(path)
        self.loaded = tf.saved_model.load(path)
        self.functions = dict(self.loaded.signatures)
        #: the model run on the export's fastest artifact within the budget (serving/runtime.py), or None: the
        #: SavedModel; and why that one
        self.artifact, self.runtime_reason = open_fastest(path, runtime, self.loaded, self.signature_defs, budget)
        self.runtime = self.artifact.kind if self.artifact else "savedmodel"
        self.batching = batching
        self._on_batch = on_batch
        self._batchers = {}
        self._lock = threading.Lock()

    def input_specs(self, signature):
        return self.function(signature).structured_input_signature[1]

    def function(self, signature):
        fn = self.functions.get(signature or "serving_default")
        if fn is None:
            raise ServingError("FAILED_PRECONDITION", f"Serving signature name: \"{signature}\" not found in "
                               f"signature def; {self.name} has {', '.join(sorted(self.functions))}")
        return fn

    def predict(self, signature, inputs, output_filter=()):
        """Run ``signature`` on {input name: value}; returns {output name: numpy array}."""
        import tensorflow as tf

        signature = signature or "serving_default"
        specs = self.input_specs(signature)
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            raise invalid(f"signature {signature} takes inputs {sorted(specs)}; " +
                          (f"missing {missing}" if missing else f"unknown {extra}"))
        arrays = {k: _coerce(k, v, specs[k]) for k, v in inputs.items()}
        sizes = {len(a) if a.ndim else 0 for a in arrays.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise invalid("every input needs the same, non-zero number of instances")
        fn = self.function(signature)
        if self.artifact and signature in self.artifact.signatures:
            fn = self.artifact.signatures[signature]

        def run(batch):
            try:
                out = fn(**{k: tf.constant(v) for k, v in batch.items()})
            except tf.errors.OpError as err:
                raise invalid(op_error_message(err)) from None
            except UnicodeDecodeError:  # TensorFlow's message quoted the raw bytes of a malformed input
                raise invalid(f"signature {signature} could not parse its input: "
                              + ("not a serialized tf.train.Example (send images to serving_bytes, or an Example "
                                 f"with the image in {IMAGE_FEATURE!r})" if signature == "classify" else
                                 "malformed binary data")) from None
            return {k: v.numpy() if hasattr(v, "numpy") else v for k, v in out.items()}

        batcher = self._batcher(signature, run)
        outputs = batcher(arrays, sizes.pop()) if batcher else run(arrays)
        if output_filter:
            unknown = sorted(set(output_filter) - set(outputs))
            if unknown:
                raise invalid(f"output_filter names unknown outputs {unknown}; {signature} has {sorted(outputs)}")
            outputs = {k: outputs[k] for k in output_filter}
        return outputs

    def _batcher(self, signature, run):
        if not self.batching:
            return None
        with self._lock:
            if signature not in self._batchers:
                on_batch = (lambda size: self._on_batch(self.name, size)) if self._on_batch else None
                self._batchers[signature] = Batcher(run, on_batch=on_batch, **self.batching)
            return self._batchers[signature]

    def close(self):
        """Retire: queued batched requests still finish."""
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()


def _versions(model_dir):
    """{version: path} of the complete version directories (``saved_model.pb`` present)."""
    found = {}
    for entry in os.listdir(model_dir):
        path = os.path.join(model_dir, entry)
        if entry.isdigit() and os.path.isfile(os.path.join(path, "saved_model.pb")):
            found[int(entry)] = path
    return found


def _fingerprint(path):
    """Changes when a version directory's files change (to retry a version that failed to load)."""
    items = []
    for root, _, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:
                continue
            items.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(items))


class ModelRepository:
    def __init__(self, base, keep_versions=2, batching=None, on_batch=None, runtime="auto", budget=None):
        if not os.path.isdir(base):
            from keras_cnns.errors import CnnkitError

            raise CnnkitError(f"{base} is not a directory; give the export base (e.g. exports) or one model's "
                              "folder (exports/lenet5)")
        self.base = os.path.abspath(base)
        self.keep_versions = keep_versions
        self.batching = batching
        self.on_batch = on_batch
        #: what runs each version's model: auto (its fastest artifact within ``budget``, an export.choice.Budget),
        #: or one runtime (serving/runtime.py)
        self.runtime, self.budget = runtime, budget
        self._servables = {}  # name -> {version: Servable}
        self._status = {}  # name -> {version: (state, error code, message)}
        self._failed = {}  # (name, version) -> fingerprint of the directory that failed to load
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()

    def model_dirs(self):
        """{name: folder}: BASE itself when it holds numbered versions, else its model sub-folders."""
        if _versions(self.base) or any(e.isdigit() for e in os.listdir(self.base)):
            return {os.path.basename(self.base): self.base}
        dirs = {}
        for entry in sorted(os.listdir(self.base)):
            path = os.path.join(self.base, entry)
            if NAME_RE.match(entry) and os.path.isdir(path) and _versions(path):
                dirs[entry] = path
        return dirs

    def scan(self):
        """Load new versions, retire removed or superseded ones. Returns (loaded, retired) lists."""
        with self._scan_lock:
            return self._scan()

    def _wanted(self, found):
        """The newest ``keep_versions`` of each model, passing over versions that failed to load (and have
        not changed since): a broken new version never retires the working ones."""
        wanted = {}
        for name, versions in found.items():
            good = [v for v in sorted(versions, reverse=True)
                    if (name, v) not in self._failed or self._failed[(name, v)] != _fingerprint(versions[v])]
            wanted.update({(name, v): versions[v] for v in good[:self.keep_versions]})
        return wanted

    def _scan(self):
        found = {name: _versions(path) for name, path in self.model_dirs().items()}
        loaded, retired = [], []
        with self._lock:
            current = {(n, v) for n, vs in self._servables.items() for v in vs}
        while True:
            wanted = self._wanted(found)
            todo = sorted(set(wanted) - current - set(loaded))
            if not todo:
                break
            for key in todo:
                if self._load(key, wanted[key]):
                    loaded.append(key)
        for key in sorted(current - set(wanted)):
            self._retire(*key)
            retired.append(key)
        return loaded, retired

    def _load(self, key, path):
        name, version = key
        self._set_status(name, version, "LOADING")
        try:
            servable = Servable(name, version, path, self.batching, self.on_batch, self.runtime, self.budget)
        except Exception as err:  # a broken version is reported, and retried when its files change
            self._failed[key] = _fingerprint(path)
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            self._set_status(name, version, "END", "UNKNOWN", f"failed to load: {message}")
            log.error("cannot load %s version %d: %s", name, version, message)
            return False
        self._failed.pop(key, None)
        with self._lock:
            self._servables.setdefault(name, {})[version] = servable
        self._set_status(name, version, "AVAILABLE")
        log.info("serving %s version %d from %s on %s (%s)", name, version, path, servable.runtime,
                 servable.runtime_reason)
        return True

    def _retire(self, name, version):
        self._set_status(name, version, "UNLOADING")
        with self._lock:
            servable = self._servables[name].pop(version)
            if not self._servables[name]:
                del self._servables[name]
        servable.close()
        self._set_status(name, version, "END")
        log.info("retired %s version %d", name, version)

    def _set_status(self, name, version, state, code="OK", message=""):
        with self._lock:
            self._status.setdefault(name, {})[version] = (state, code, message)

    def get(self, name, version=None):
        """The servable for a request: the newest version, or the one asked for."""
        with self._lock:
            versions = self._servables.get(name, {})
            if version is None:
                if not versions:
                    raise not_found(f"Servable not found for request: Latest({name})")
                return versions[max(versions)]
            if version not in versions:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return versions[version]

    def status(self, name, version=None):
        """[(version, state, error code, message)], newest first, like GetModelStatus."""
        with self._lock:
            known = dict(self._status.get(name, {}))
        if not known:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in known:
                raise not_found(f"Could not find version {version} of model {name}")
            known = {version: known[version]}
        return [(v,) + known[v] for v in sorted(known, reverse=True)]

    def label(self, name):
        """``name`` for a metrics label if it is served, else "": requests for made-up names must not
        create new metric series without bound."""
        with self._lock:
            return name if name in self._servables else ""

    def runtimes(self, reasons=False):
        """{name: {version: what runs its model}} ("savedmodel", "tflite-float32", ...); with ``reasons``,
        {name: {version: {"runtime", "reason"}}}."""
        with self._lock:
            return {name: {v: {"runtime": s.runtime, "reason": s.runtime_reason} if reasons else s.runtime
                           for v, s in vs.items()} for name, vs in self._servables.items()}

    def names(self):
        with self._lock:
            return sorted(self._servables)

    def close(self):
        with self._lock:
            servables = [s for vs in self._servables.values() for s in vs.values()]
            self._servables = {}
        for servable in servables:
            servable.close()
