"""Fetching a checkpoint: the cache (Keras' and torch.hub's too), a mirror, a download checked for its length and
hash and written atomically."""
import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request

from keras_cnns.errors import CnnkitError
from keras_cnns.files import replaced_atomically

log = logging.getLogger("keras_cnns.pretrained")


def cache_dir():
    """``$CNNKIT_CACHE_DIR`` or ~/.cache/cnnkit, with a ``weights`` folder."""
    root = os.environ.get("CNNKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cnnkit")
    return os.path.join(root, "weights")


def _other_caches(filename):
    """Where Keras and torch.hub would already have put the same file."""
    home = os.path.expanduser("~")
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(home, ".cache", "torch")
    return [os.path.join(os.environ.get("KERAS_HOME") or os.path.join(home, ".keras"), "models", filename),
            os.path.join(torch_home, "hub", "checkpoints", filename)]


def hash_matches(path, file_hash):
    """Keras' rule for a 32-digit md5 or a 64-digit sha256; torch.hub's for a shorter sha256 prefix."""
    if not file_hash:
        return True
    digest = hashlib.md5() if len(file_hash) == 32 else hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(file_hash.lower())


def _mirror(url):
    """``$CNNKIT_WEIGHTS_MIRROR`` (a base URL or folder holding the files by name) replaces the source's host."""
    mirror = os.environ.get("CNNKIT_WEIGHTS_MIRROR")
    if not mirror:
        return url
    if "://" not in mirror:
        mirror = "file://" + os.path.abspath(mirror)
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]


def fetch(checkpoint, progress=True, timeout=60):
    """The checkpoint's local path: from the cache (Keras' and torch.hub's too), else downloaded.

    The download streams into a temporary file beside the cache entry, is checked for its full length
    and its hash, and only then renamed into place, so an interrupted or corrupt transfer leaves nothing
    that a later run would take for the checkpoint."""
    folder = cache_dir()
    target = os.path.join(folder, checkpoint.filename)
    for path in [target] + _other_caches(checkpoint.filename):
        if os.path.isfile(path) and hash_matches(path, checkpoint.file_hash):
            return path
    url = _mirror(checkpoint.url)
    os.makedirs(folder, exist_ok=True)
    try:
        with replaced_atomically(target) as partial:
            _download(url, partial, progress, timeout)
            if not hash_matches(partial, checkpoint.file_hash):
                raise CnnkitError(f"{url} does not have the hash {checkpoint.file_hash} that {checkpoint.source} "
                                  "publishes for it (a changed or corrupt file); nothing was kept")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", None) or err.strerror or err
        raise CnnkitError(
            f"cannot download {url} ({reason}); download it elsewhere and pass it with --weights FILE, or use "
            "--weights none for the untrained model") from None
    return target


def _download(url, path, progress, timeout):
    """Stream ``url`` into ``path``; progress goes to the "keras_cnns" logger every 10% (the CLI shows it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown, started = 0, 0, time.monotonic()
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if progress and total and 100 * done // total >= shown + 10:
                shown = 100 * done // total // 10 * 10
                rate = done / max(time.monotonic() - started, 1e-6) / 1e6
                log.info("downloading %s: %d%% of %.0f MB (%.1f MB/s)", os.path.basename(url), shown,
                         total / 1e6, rate)
        if total and done != total:
            raise OSError(0, f"the transfer ended after {done} of {total} bytes")
