"""SavedModel / TFLite / ONNX export, compression and parity validation.

Not built yet: this package is the export issue's work (it depends on the training engine). The
dependency direction is fixed already: ``cnnkit -> serving -> export -> keras_cnns``.
"""
