"""TF-Serving-compatible embedded server, clients and TF Serving container assets.

Not built yet: this package is the serving issue's work (it depends on the export layout).
"""
