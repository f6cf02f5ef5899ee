"""SavedModel / TFLite / ONNX export and parity validation.

    >>> from export import export, validate
    >>> path, report = export("runs/latest", formats=export.plan_formats(tflite_out=True, onnx_out=True))

The SavedModel is the one canonical static graph; TFLite and ONNX are derived from it; every artifact
is compared with the Keras model before the version directory appears (see ``exporter``).
Dependency direction: ``cnnkit -> serving -> export -> keras_cnns``.
"""
from export.exporter import ExportOptions, export, plan_formats, validate
from export.formats import FORMATS, QUANTIZE

__all__ = ["export", "validate", "plan_formats", "ExportOptions", "FORMATS", "QUANTIZE"]
