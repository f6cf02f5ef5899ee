"""TF Serving deployment files for the models under an export base (``cnnkit serve BASE --emit-config``).

::

    OUT/Dockerfile                  tensorflow/serving pinned to our TensorFlow version, with the configs
    OUT/models.config               ModelServerConfig: one entry per model, newest ``keep_versions`` served
    OUT/batching_parameters.txt     BatchingParameters
    OUT/monitoring.config           MonitoringConfig: Prometheus at /monitoring/prometheus/metrics
    OUT/docker-compose.yml          TF Serving, the export base mounted read-only at /models; and nginx
                                    serving the model page beside TF Serving's REST API on :8080
    OUT/nginx.conf, OUT/web/        that nginx site, and the page (serving/web/index.html)
    OUT/k8s/deployment.yaml         Deployment (readiness on the model status endpoint), Service,
    OUT/k8s/service.yaml            and a HorizontalPodAutoscaler on CPU
    OUT/k8s/hpa.yaml

``load`` parses a folder back with TF Serving's protos and a YAML parser (the tests do, so a typo
cannot ship).
"""
import os
import shutil

import yaml

from keras_cnns.errors import CnnkitError
from serving import metrics, tfserving_protos
from serving.repository import ModelRepository

DOCKERFILE = os.path.join(os.path.dirname(__file__), "container", "Dockerfile")
PAGE = os.path.join(os.path.dirname(__file__), "web", "index.html")
IMAGE = "cnnkit-tfserving"
MODELS_MOUNT = "/models"
WEB_PORT = 8080
NGINX_IMAGE = "nginx:1.27-alpine"


def models_config(names, keep_versions=2):
    config = tfserving_protos.ModelServerConfig()
    for name in names:
        entry = config.model_config_list.config.add(name=name, base_path=f"{MODELS_MOUNT}/{name}",
                                                    model_platform="tensorflow")
        entry.model_version_policy.latest.num_versions = keep_versions
    return config


def batching_parameters(max_batch_size=32, timeout_ms=2.0, threads=2, max_enqueued_batches=100):
    params = tfserving_protos.BatchingParameters()
    params.max_batch_size.value = max_batch_size
    params.batch_timeout_micros.value = int(timeout_ms * 1000)
    params.num_batch_threads.value = threads
    params.max_enqueued_batches.value = max_enqueued_batches
    return params


def monitoring_config():
    config = tfserving_protos.MonitoringConfig()
    config.prometheus_config.enable = True
    config.prometheus_config.path = metrics.PATH
    return config


def compose(export_base):
    return {"services": {
        "tfserving": {
            "build": ".", "image": f"{IMAGE}:latest", "restart": "unless-stopped",
            "ports": ["8500:8500", "8501:8501"],
            "volumes": [f"{os.path.abspath(export_base)}:{MODELS_MOUNT}:ro"],
            "stop_grace_period": "30s",
        },
        "web": {
            "image": NGINX_IMAGE, "restart": "unless-stopped", "depends_on": ["tfserving"],
            "ports": [f"{WEB_PORT}:80"],
            "volumes": ["./web:/usr/share/nginx/html:ro", "./nginx.conf:/etc/nginx/conf.d/default.conf:ro"],
        },
    }}


def nginx_conf(names, upstream="tfserving:8501", max_body_mb=64):
    """An nginx site that serves the model page and passes TF Serving's REST API and metrics through, so that
    the page and the API share one origin (TF Serving sends no CORS headers)."""
    models = ",".join(names)
    return f"""# cnnkit's model page in front of TF Serving: http://HOST:{WEB_PORT}/
server {{
    listen 80;
    root /usr/share/nginx/html;
    client_max_body_size {max_body_mb}m;
    location = / {{
        if ($arg_models = "") {{ return 302 /?models={models}; }}
        try_files /index.html =404;
    }}
    location /v1/ {{ proxy_pass http://{upstream}; }}
    location = {metrics.PATH} {{ proxy_pass http://{upstream}; }}
}}
"""


def kubernetes(names, replicas=2, max_replicas=8):
    labels = {"app": IMAGE}
    probe_model = names[0]
    container = {
        "name": "tfserving", "image": f"{IMAGE}:latest",
        "ports": [{"name": "grpc", "containerPort": 8500}, {"name": "http", "containerPort": 8501}],
        "readinessProbe": {"httpGet": {"path": f"/v1/models/{probe_model}", "port": 8501},
                           "initialDelaySeconds": 5, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": 8500}, "initialDelaySeconds": 15, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": IMAGE, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels, "annotations": {
                "prometheus.io/scrape": "true", "prometheus.io/port": "8501", "prometheus.io/path": metrics.PATH}},
            "spec": {"terminationGracePeriodSeconds": 30, "containers": [container], "volumes": [
                {"name": "models", "persistentVolumeClaim": {"claimName": "cnnkit-models", "readOnly": True}}]}}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": IMAGE, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "grpc", "port": 8500, "targetPort": 8500},
                                               {"name": "http", "port": 8501, "targetPort": 8501}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": IMAGE},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": IMAGE},
                 "minReplicas": replicas, "maxReplicas": max_replicas,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 70}}}]},
    }
    return {"deployment.yaml": deployment, "service.yaml": service, "hpa.yaml": hpa}


def emit(export_base, output="tfserving", keep_versions=2, max_batch_size=32, batch_timeout_ms=2.0,
         batch_threads=2):
    """Write the deployment files for every model under ``export_base``; returns the paths written."""
    from keras_cnns.files import write_atomic

    names = sorted(ModelRepository(export_base).model_dirs())
    if not names:
        raise CnnkitError(f"no exported model under {export_base}: expected NAME/VERSION folders with "
                          "saved_model.pb (what `cnnkit export` writes)")
    texts = {"models.config": models_config(names, keep_versions),
             "batching_parameters.txt": batching_parameters(max_batch_size, batch_timeout_ms, batch_threads),
             "monitoring.config": monitoring_config()}
    files = {filename: tfserving_protos.to_text(message) for filename, message in texts.items()}
    manifests = {"docker-compose.yml": compose(export_base)}
    manifests.update({f"k8s/{k}": v for k, v in kubernetes(names).items()})
    files.update({filename: yaml.safe_dump(doc, sort_keys=False) for filename, doc in manifests.items()})
    files["nginx.conf"] = nginx_conf(names)
    written = []
    try:
        os.makedirs(os.path.join(output, "k8s"), exist_ok=True)
        os.makedirs(os.path.join(output, "web"), exist_ok=True)
        for filename, text in files.items():
            written.append(write_atomic(os.path.join(output, filename), text.encode("utf-8")))
        shutil.copyfile(DOCKERFILE, os.path.join(output, "Dockerfile"))
        written.append(shutil.copyfile(PAGE, os.path.join(output, "web", "index.html")))
    except OSError as err:
        raise CnnkitError(f"cannot write the serving configs to {output}: {err.strerror}") from None
    return [os.path.join(output, "Dockerfile")] + written, names


def load(output):
    """Parse an emitted config folder back: {file: proto message or YAML document}."""
    parsed = {}
    for filename, cls in (("models.config", tfserving_protos.ModelServerConfig),
                          ("batching_parameters.txt", tfserving_protos.BatchingParameters),
                          ("monitoring.config", tfserving_protos.MonitoringConfig)):
        with open(os.path.join(output, filename), encoding="utf-8") as f:
            parsed[filename] = tfserving_protos.parse(f.read(), cls)
    for filename in ("docker-compose.yml", "k8s/deployment.yaml", "k8s/service.yaml", "k8s/hpa.yaml"):
        with open(os.path.join(output, filename), encoding="utf-8") as f:
            parsed[filename] = yaml.safe_load(f)
    return parsed
