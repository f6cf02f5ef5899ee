"""Serving: an embedded TF-Serving-compatible model server, clients, and TF Serving's deployment files.

- ``server``: :class:`~serving.server.ModelServer`, REST (``rest``) + gRPC (``grpc_api``) over a
  ``repository`` of SavedModel versions that is watched for new and removed versions; optional
  ``batching``; Prometheus ``metrics``.
- ``client``: the same calls against TF Serving or the embedded server (REST or gRPC), or an artifact
  run in-process; ``loadgen``: the load generator of ``cnnkit bench serve``.
- ``config``: Dockerfile (``container/``), models/batching/monitoring configs, docker-compose and
  Kubernetes manifests for TF Serving itself, checked with its protos (``tfserving_protos``).
"""
