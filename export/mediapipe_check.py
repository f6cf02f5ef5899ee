"""The phone's judge of a TFLite file: MediaPipe Tasks' ImageClassifier, which an app runs from the file's
metadata alone. In the parity report it must load the file, name the classes and agree with LiteRT on the
evaluation images, and on full-size photos (decoded as an app decodes them, resized by MediaPipe) with what
the server answers."""
import io

import numpy as np

from export import parity, tflite
from export.savedmodel import BYTES_SIGNATURE
from keras_cnns.errors import CnnkitError

#: MediaPipe Tasks must agree with LiteRT on the top-1 class of this share of (up to this many) images
MEDIAPIPE_AGREEMENT = 0.99
MEDIAPIPE_IMAGES = 200
#: full-size photos on which MediaPipe Tasks (resizing them itself) must agree with the served SavedModel
FULL_SIZE_PHOTOS = 60
#: how many times the input side a full-size photo is (each side drawn apart: the photos are not square)
FULL_SIZE_FACTORS = (4, 10)
#: no side above this many pixels (a 224-input model's 60 photos stay near 60 MB encoded, the check quick)
FULL_SIZE_MAX_SIDE = 1280


def judge(row, fmt, path, outputs, context):
    """The MediaPipe Tasks checks of a TFLite row (``outputs``: LiteRT's probabilities on ``context["images"]``),
    into ``row["mediapipe"]``; a failed one fails the row. The full-size photos and the served SavedModel's
    answers on them are made once per report, for the first row that needs them (kept in ``context``)."""
    images = context["images"]
    row["mediapipe"] = mediapipe_check(path, outputs, images, bool(row.get("int8_io")))
    row["ok"] = row["ok"] and row["mediapipe"]["ok"]
    if not row["mediapipe"]["loads"]:
        return
    if "photos" not in context:
        context["photos"] = full_size_photos(images)
        context["pixels"], context["served"] = _served_on_photos(context["export_dir"], context["photos"],
                                                                 images.shape[1:])
    if fmt.precision:  # a float file: the server's answers
        reference, against = context["served"], "the served SavedModel"
    else:  # a quantized or compressed file differs from the float model on its own (its row says by
        # how much): the same file in LiteRT, on the photos as the server decodes and resizes them
        reference, against = tflite.Runner(path)(context["pixels"]), "LiteRT (server's resize)"
    row["mediapipe"]["full_size"] = mediapipe_full_size(path, context["photos"], reference, against)
    row["ok"] = row["ok"] and row["mediapipe"]["full_size"]["ok"]


def failure_text(check):
    if not check:
        return ""
    if not check["loads"]:
        return "" if check["ok"] else f"; {check['error']}"
    text = "" if check["ok"] else (
        f"; MediaPipe Tasks agrees with LiteRT on {check['top1_agreement']:.1%} of {check['images']} images "
        f"(needs {MEDIAPIPE_AGREEMENT:.0%}), category names {', '.join(check['names']) or 'none'}")
    full = check.get("full_size")
    if full and not full["ok"]:
        text += (f"; on {full['photos']} full-size photos MediaPipe Tasks agrees with {full['against']} on "
                 f"{full['top1_agreement']:.1%} (needs {MEDIAPIPE_AGREEMENT:.0%}): the decode or resize differs")
    return text


def mediapipe_check(path, litert_outputs, images, int8_io=False, count=MEDIAPIPE_IMAGES):
    """Does the ``.tflite`` load and classify in MediaPipe Tasks' ImageClassifier from its metadata alone,
    and agree with LiteRT (``litert_outputs``: its probabilities on ``images``)?
    {"loads", "top1_agreement", "names", "images", "ok", "error"}.
    ``int8_io``: int8 input was asked for (--int8-io int8), for runtimes other than MediaPipe: a refusal is
    reported, not a failure."""
    images, want = images[:count], litert_outputs[:count]
    if images.shape[-1] not in (1, 3):  # not a photo classifier: nothing MediaPipe Tasks could feed it
        return {"loads": False, "ok": True, "error": f"MediaPipe Tasks classifies RGB images; this model takes "
                                                     f"{images.shape[-1]} channels (not checked)"}
    try:
        runner = tflite.MediaPipeRunner(path)
    except CnnkitError as err:
        return {"loads": False, "ok": int8_io, "error": str(err) + (
            " (int8 input was asked for with --int8-io int8; MediaPipe Tasks takes uint8 or float32)" if int8_io
            else "")}
    got = runner(images).argmax(axis=1)
    runner.close()
    agreement = _agreement(want, got)
    names = sorted(runner.names)
    return {"loads": True, "images": int(len(images)), "top1_agreement": agreement, "names": names[:20],
            "ok": agreement >= MEDIAPIPE_AGREEMENT and set(names) <= set(runner.labels) and bool(names),
            "error": None}


def full_size_photos(images, count=FULL_SIZE_PHOTOS, seed=0):
    """Encoded photos 4-10x larger than the input on each side, the two sides scaled apart (non-square),
    made from ``images`` (the evaluation images: what the model knows) with grain (fine texture, which a resize
    other than the contract renders otherwise), JPEG and one in four PNG: what a user sends, which every runtime
    must decode and shrink to the input by the image contract (keras_cnns.imaging)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    for i in range(count):  # fewer evaluation images than photos: each is used again, at other sizes
        image = images[i % len(images)]
        h, w, c = image.shape
        fy, fx = rng.uniform(*FULL_SIZE_FACTORS, 2)
        shrink = min(1.0, FULL_SIZE_MAX_SIDE / max(w * fx, h * fy))  # a big input's photos keep their aspect
        size = (int(w * fx * shrink), int(h * fy * shrink))
        big = np.asarray(Image.fromarray(image[..., 0] if c == 1 else image).resize(size, Image.BICUBIC), np.float32)
        big += 24 * rng.standard_normal(big.shape, dtype=np.float32)
        big = np.clip(np.round(big), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()  # PNG at zlib level 1: the same pixels, written 7x faster
        Image.fromarray(big).save(buffer, **({"format": "PNG", "compress_level": 1} if len(photos) % 4 == 3
                                             else {"format": "JPEG", "quality": 95}))
        photos.append(buffer.getvalue())
    return photos


def _served_on_photos(export_dir, photos, shape):
    """(pixels, probabilities) of the served SavedModel on photos: its ``serving_bytes`` signature decodes and
    resizes them in its graph; the pixels are the same decode and resize (keras_cnns.imaging), for other runtimes."""
    import tensorflow as tf

    from keras_cnns.imaging import decode, resize

    serve = tf.saved_model.load(export_dir).signatures[BYTES_SIGNATURE]
    served = np.concatenate([serve(image_bytes=tf.constant(photos[i:i + 8]))["probabilities"].numpy()
                             for i in range(0, len(photos), 8)])
    return np.stack([resize(decode(p, shape[-1]), shape[:2]).numpy() for p in photos]), served


def _agreement(reference, got_top1, tolerance=parity.FLOAT_TOLERANCE):
    """Share of images whose class ``got_top1`` is the reference's top-1 or tied with it within ``tolerance`` (an
    untrained model's near-uniform probabilities leave ties that rounding in either runtime may break)."""
    return float((np.take_along_axis(reference, got_top1[:, None], 1)[:, 0] >= reference.max(axis=1) - tolerance)
                 .mean())


def mediapipe_full_size(path, photos, reference, against):
    """MediaPipe Tasks on full-size photos (decoded as an app decodes them, resized by MediaPipe) against
    ``reference``, the probabilities ``against`` gave on the same files: {"photos", "top1_agreement",
    "against", "ok"}."""
    from PIL import Image

    runner = tflite.MediaPipeRunner(path)
    try:
        got = np.stack([runner.scores(np.asarray(Image.open(io.BytesIO(p)).convert("RGB"))) for p in photos])
    finally:
        runner.close()
    agreement = _agreement(reference, got.argmax(axis=1))
    return {"photos": len(photos), "top1_agreement": agreement, "against": against,
            "ok": agreement >= MEDIAPIPE_AGREEMENT}
