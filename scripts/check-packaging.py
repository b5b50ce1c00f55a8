#!/usr/bin/env python3
"""Offline checks of the packaging: Helm charts, k8s/ manifests,
docker-compose.yml, the Dockerfile and the Tiltfile.

Run through scripts/check-packaging.sh (it creates the .venv with the pinned
tools). Nothing here needs Docker or a cluster: charts are rendered and linted
with Helm as a library (helm-python-sdk), every rendered object is validated
against the Kubernetes 1.37 OpenAPI schemas in strict mode (the library behind
`kubernetes-validate --strict`; unlike the CLI, an unknown kind is an error
here), custom resources against their CRD's openAPIV3Schema, and the rest is
parsed and checked with assertions.

Also checks that the Markdown files' relative links resolve.

Prints one line per check and closes with `packaging: N passed, N failed`;
exits 1 when any check failed.
"""

from __future__ import annotations

import ast
import copy
import difflib
import glob
import os
import re
import json
import shlex
import shutil
import subprocess
import tempfile
import sys
import time
import traceback
from pathlib import Path

import helm_python as helm
import jsonschema
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parent.parent
KUBE_VERSION = "1.37.0"

# The settled conventions (docs/configuration.md, the services' READMEs).
PORTS = {
    "gateway": 8080,
    "inventory": 50051,
    "order": 50052,
    "user": 50053,
    "producer": 50054,
    "consumer": 50055,
}
SERVICES = list(PORTS)
# /metrics, apart from the API (METRICS_PORT): the only port scrapers reach.
METRICS_PORTS = {
    "gateway": 9080,
    "inventory": 9051,
    "order": 9052,
    "user": 9053,
    "producer": 9054,
    "consumer": 9055,
}
DEFAULT_TRUSTED_PROXIES = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
LISTEN_VAR = {s: ("API_GATEWAY_ADDR" if s == "gateway" else f"{s.upper()}_ADDR") for s in SERVICES}
DB_SERVICES = {"inventory", "order", "user"}
# NATS_ADDR and NATS_SUBJECT_PREFIX: the order events' producer and consumer
# (JetStream), Inventory announcing product changes and the gateways' product
# caches hearing them (plain NATS, best effort).
NATS_SERVICES = {"inventory", "producer", "consumer", "gateway"}
# gRPC calls: who dials whom.
CALLS = {
    "gateway": {"inventory", "order", "user"},
    "order": {"inventory", "producer"},
    "consumer": {"inventory", "order"},
}
CALLERS = {s: {c for c, callees in CALLS.items() if s in callees} for s in SERVICES}
SECRET_VARS = {"DB_PASSWORD", "JWT_SECRET", "ADMIN_PASSWORD", "INTERNAL_AUTH_TOKEN"}
UID = 10001

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}


# --------------------------------------------------------------------------
# a tiny runner

class Runner:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[tuple[str, str]] = []

    def check(self, name: str, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except AssertionError as e:
            detail = str(e) or "assertion failed"
            label = name.rsplit(": ", 1)[-1]
            if detail.startswith(label + ": "):
                detail = detail[len(label) + 2:]
            self.failed.append((name, detail))
            print(f"FAIL {name}: {detail}")
            return None
        except Exception as e:  # noqa: BLE001 - a crash of a check is a failure
            detail = f"{type(e).__name__}: {e}"
            self.failed.append((name, detail))
            print(f"FAIL {name}: {detail}")
            if os.environ.get("PACKAGING_DEBUG"):
                traceback.print_exc()
            return None
        self.passed += 1
        print(f"ok   {name}")
        return result


def fail(msg: str) -> None:
    raise AssertionError(msg)


# --------------------------------------------------------------------------
# what the services read

SETTINGS_BEGIN = "<!-- settings: generated from the services' config::SETTINGS"
SETTINGS_END = "<!-- /settings -->"


def known_env_names() -> set[str]:
    """Every variable the services read: the first column of the settings
    tables generated from their declarations (`config::SETTINGS`; the e2e
    test `settings` keeps the tables equal to them)."""
    names: set[str] = set()
    pages = [ROOT / "docs/configuration.md"] + [ROOT / f"services/{s}/README.md" for s in SERVICES
                                               if (ROOT / f"services/{s}/README.md").exists()]
    if not pages[0].is_file():
        fail("docs/configuration.md (the shared settings) is missing")
    for path in pages:
        text = path.read_text()
        start = text.find(SETTINGS_BEGIN)
        if start < 0:
            continue
        end = text.find(SETTINGS_END, start)
        if end < 0:
            fail(f"{path}: the generated settings table has no end marker")
        names |= set(re.findall(r"^\| `([A-Z][A-Z0-9_]{2,})` \|", text[start:end], re.M))
    if len(names) < 30:
        fail(f"only {len(names)} declared settings found in the generated tables")
    return names


def env_name_known(name: str, known: set[str]) -> bool:
    # OTEL_* are the OpenTelemetry SDK's own (docs/configuration.md: "other `OTEL_*`").
    return name in known or name.startswith("OTEL_")


# --------------------------------------------------------------------------
# Kubernetes objects

def load_docs(text: str, origin: str) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        fail(f"{origin}: not YAML: {e}")
    for d in docs:
        if not isinstance(d, dict) or not {"apiVersion", "kind", "metadata"} <= d.keys():
            fail(f"{origin}: a document without apiVersion/kind/metadata: {str(d)[:120]}")
        if not d["metadata"].get("name"):
            fail(f"{origin}: a {d['kind']} without metadata.name")
    return docs


class CrdIndex:
    """Custom resource schemas, from the CRDs found in k8s/ and charts' crds/."""

    def __init__(self) -> None:
        self.schemas: dict[tuple[str, str, str], dict] = {}

    def add(self, crd: dict) -> None:
        spec = crd["spec"]
        for version in spec.get("versions", []):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if not schema:
                fail(f"CRD {crd['metadata']['name']} version {version.get('name')} has no openAPIV3Schema")
            key = (spec["group"], version["name"], spec["names"]["kind"])
            self.schemas[key] = schema

    def lookup(self, doc: dict):
        api = doc["apiVersion"]
        if "/" not in api:
            return None
        group, version = api.split("/", 1)
        return self.schemas.get((group, version, doc["kind"]))


def strict_schema(schema, top: bool = False):
    """A CRD's structural schema as the API server applies it with strict
    field validation (kubectl's default): unknown fields are errors unless
    x-kubernetes-preserve-unknown-fields says otherwise."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) if k not in ("properties", "enum", "default", "example") else v
           for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: strict_schema(v) for k, v in schema["properties"].items()}
        if top:
            for k in ("apiVersion", "kind"):
                out["properties"].setdefault(k, {"type": "string"})
            out["properties"].setdefault("metadata", {"type": "object"})
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def validate_object(doc: dict, origin: str, crds: CrdIndex) -> None:
    schema = crds.lookup(doc)
    if schema is not None:
        validator = jsonschema.Draft7Validator(strict_schema(schema, top=True))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            fail(f"{origin}: {doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
        return
    try:
        kv.validate(doc, KUBE_VERSION, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        fail(f"{origin}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {KUBE_VERSION} (strict): {path}: {e.message}")
    except kv.SchemaNotFoundError:
        fail(f"{origin}: no schema for {doc['apiVersion']} {doc['kind']} (neither Kubernetes {KUBE_VERSION} nor a known CRD)")


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def pod_labels(doc: dict) -> dict:
    return doc["spec"]["template"]["metadata"].get("labels") or {}


def selector_matches(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        val = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and val not in expr["values"]:
            return False
        if op == "NotIn" and val in expr["values"]:
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def check_workload_invariants(docs: list[dict], origin: str) -> None:
    """Every container: resources, a hardened securityContext; long-running
    ones: liveness and readiness probes; selectors that match."""
    seen = set()
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    for d in docs:
        key = (d["kind"], d["metadata"]["name"])
        if key in seen:
            fail(f"{origin}: two objects {key}")
        seen.add(key)
        name = d["metadata"]["name"]
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
            fail(f"{origin}: {d['kind']} name {name!r} is not a DNS-1123 subdomain")
        if d["kind"] in ("Service", "Deployment", "StatefulSet") and not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            fail(f"{origin}: {d['kind']} name {name!r} is not a DNS-1035 label (at most 63 characters)")
        for k, v in (d["metadata"].get("labels") or {}).items():
            if len(str(v)) > 63:
                fail(f"{origin}: {d['kind']}/{name}: label {k} is longer than 63 characters")
    for d in workloads:
        name = f"{d['kind']}/{d['metadata']['name']}"
        spec = pod_spec(d)
        psc = spec.get("securityContext") or {}
        if d["kind"] not in ("Job", "Pod"):
            sel = d["spec"].get("selector") or {}
            if not sel.get("matchLabels") or not selector_matches(sel, pod_labels(d)):
                fail(f"{origin}: {name}: selector {sel} does not match its pod labels {pod_labels(d)}")
        for c in spec.get("initContainers", []) + spec["containers"]:
            cname = f"{name} container {c['name']}"
            res = c.get("resources") or {}
            if not res.get("requests") or not res.get("limits"):
                fail(f"{origin}: {cname}: resources need requests and limits")
            if "memory" not in res["limits"]:
                fail(f"{origin}: {cname}: no memory limit")
            sc = c.get("securityContext")
            if not sc:
                fail(f"{origin}: {cname}: no securityContext")
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                fail(f"{origin}: {cname}: runAsNonRoot is not set")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                fail(f"{origin}: {cname}: runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(f"{origin}: {cname}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{origin}: {cname}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                fail(f"{origin}: {cname}: capabilities do not drop ALL")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                fail(f"{origin}: {cname}: seccompProfile is {seccomp!r}, not RuntimeDefault")
            if d["kind"] in LONG_RUNNING and c in spec["containers"]:
                for probe in ("livenessProbe", "readinessProbe"):
                    if not c.get(probe):
                        fail(f"{origin}: {cname}: no {probe}")
    # Services, PDBs, HPAs and NetworkPolicies point at something real.
    pods = [pod_labels(d) for d in workloads if d["kind"] not in ("Job", "Pod")]
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "Service" and d["spec"].get("selector"):
            if not any(selector_matches({"matchLabels": d["spec"]["selector"]}, p) for p in pods):
                fail(f"{origin}: {name} selects no pod of the chart")
        if d["kind"] in ("PodDisruptionBudget", "NetworkPolicy"):
            sel = d["spec"].get("selector") or d["spec"].get("podSelector") or {}
            if not any(selector_matches(sel, p) for p in pods):
                fail(f"{origin}: {name} selects no pod of the chart")
        if d["kind"] == "HorizontalPodAutoscaler":
            target = d["spec"]["scaleTargetRef"]
            if target["kind"] != "Deployment" or target["name"] not in deployments:
                fail(f"{origin}: {name} scales {target}, which the chart does not render")


def render(chart: helm.Chart, values: dict | None, **kw) -> dict[str, str]:
    opts = {"name": "ci", "namespace": "ci", "is_install": True}
    opts.update(kw)
    return chart.render(copy.deepcopy(values) if values is not None else None, **opts)


def rendered_docs(manifests: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        docs += load_docs(text, path)
    return docs


# --------------------------------------------------------------------------
# the stack chart's own conventions

def container_env(c: dict, configmaps: dict[str, dict]) -> tuple[dict, dict]:
    """(plain values, valueFrom sources) of a container: its env and envFrom."""
    plain: dict[str, str] = {}
    refs: dict[str, dict] = {}
    for src in c.get("envFrom") or []:
        cm = (src.get("configMapRef") or {}).get("name")
        if cm is None:
            fail(f"container {c['name']}: envFrom other than a ConfigMap: {src}")
        if cm not in configmaps:
            fail(f"container {c['name']}: envFrom ConfigMap {cm} is not rendered")
        plain.update(configmaps[cm].get("data") or {})
    for e in c.get("env") or []:
        if "valueFrom" in e:
            refs[e["name"]] = e["valueFrom"]
            plain.pop(e["name"], None)
        else:
            plain[e["name"]] = e.get("value", "")
    return plain, refs


def profile(merged: dict) -> dict[str, bool]:
    """What the development profile adds (templates/_helpers.tpl): the
    in-cluster PostgreSQL and NATS where no external one is set (or when
    forced), and the chart's own Secret without secrets.existingSecret."""
    dev = merged["appEnv"] == "development"
    return {
        "postgresql": bool(merged["postgresql"]["enabled"] or (dev and not merged["externalDatabase"]["host"])),
        "nats": bool(merged["nats"]["enabled"] or (dev and not merged["externalNats"]["url"])),
        "secret": dev and not merged["secrets"]["existingSecret"],
    }


def check_stack_chart(docs: list[dict], values: dict, known: set[str], origin: str) -> None:
    merged = values
    wants = profile(merged)
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    configmaps = by_kind.get("ConfigMap", {})
    services = by_kind.get("Service", {})
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
                   for d in by_kind.get("Deployment", {}).values()}
    if set(deployments) != set(SERVICES):
        fail(f"{origin}: Deployments for {sorted(deployments)}, expected {SERVICES}")
    secret_name = merged["secrets"]["existingSecret"] or None
    service_ports = {}
    for name, svc in services.items():
        service_ports[name] = {p["port"] for p in svc["spec"]["ports"]}
    for s, d in deployments.items():
        where = f"{origin}: Deployment/{d['metadata']['name']}"
        spec = pod_spec(d)
        if len(spec["containers"]) != 1:
            fail(f"{where}: expected one container")
        c = spec["containers"][0]
        if not re.fullmatch(rf"(.+/)?ecommerce/{s}:[^:/]+", c["image"]):
            fail(f"{where}: image {c['image']} is not <registry/>ecommerce/{s}:<tag>")
        if c.get("command"):
            fail(f"{where}: overrides the image's ENTRYPOINT")
        ports = [p["containerPort"] for p in c["ports"]]
        if ports != [PORTS[s], METRICS_PORTS[s]]:
            fail(f"{where}: container ports {ports}, expected [{PORTS[s]}, {METRICS_PORTS[s]}]")
        if c["ports"][1].get("name") != "metrics":
            fail(f"{where}: the metrics containerPort is not named metrics")
        annotations = d["spec"]["template"]["metadata"].get("annotations") or {}
        if "prometheus.io/port" in annotations and annotations["prometheus.io/port"] != str(METRICS_PORTS[s]):
            fail(f"{where}: scraped on port {annotations['prometheus.io/port']}, not its metrics port")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path or get.get("port") not in (PORTS[s], "http", "grpc"):
                fail(f"{where}: {probe} is not GET {path} on port {PORTS[s]}: {get}")
        psc = spec.get("securityContext") or {}
        if c["securityContext"].get("runAsUser", psc.get("runAsUser")) != UID:
            fail(f"{where}: does not run as uid {UID}")
        if spec.get("automountServiceAccountToken") is not False:
            fail(f"{where}: mounts a service account token it does not need")
        plain, refs = container_env(c, configmaps)
        for name in list(plain) + list(refs):
            if not env_name_known(name, known):
                fail(f"{where}: sets {name}, which no service reads (not in their sources or READMEs)")
        for name in SECRET_VARS & set(plain):
            fail(f"{where}: {name} is a plain value (ConfigMap or env value); it must come from a Secret")
        if plain.get("APP_ENV") != merged["appEnv"]:
            fail(f"{where}: APP_ENV={plain.get('APP_ENV')!r}, values say {merged['appEnv']!r}")
        if plain.get(LISTEN_VAR[s]) != f":{PORTS[s]}":
            fail(f"{where}: {LISTEN_VAR[s]}={plain.get(LISTEN_VAR[s])!r}, expected ':{PORTS[s]}'")
        for callee in CALLS.get(s, ()):
            addr = plain.get(LISTEN_VAR[callee], "")
            host, _, port = addr.rpartition(":")
            if host not in services or int(port or 0) not in service_ports[host] or int(port) != PORTS[callee]:
                fail(f"{where}: {LISTEN_VAR[callee]}={addr!r} is not a rendered Service on port {PORTS[callee]}")
            comp = services[host]["spec"]["selector"].get("app.kubernetes.io/component")
            if comp != callee:
                fail(f"{where}: {LISTEN_VAR[callee]} points at the Service of {comp}")
        needs = set()
        if s in DB_SERVICES:
            needs |= {"DB_PASSWORD"}
            for v in ("DB_HOST", "DB_PORT", "DB_USER", "DB_NAME"):
                if not plain.get(v):
                    fail(f"{where}: {v} is not set")
        needs |= {"INTERNAL_AUTH_TOKEN"}
        if plain.get("METRICS_PORT") != str(METRICS_PORTS[s]):
            fail(f"{where}: METRICS_PORT={plain.get('METRICS_PORT')!r}, expected {METRICS_PORTS[s]}")
        if s == "gateway":
            needs |= {"JWT_SECRET"}
            want = ",".join(merged["ingress"]["trustedProxies"]) if merged["ingress"]["enabled"] else None
            if plain.get("TRUSTED_PROXIES") != want:
                fail(f"{where}: TRUSTED_PROXIES={plain.get('TRUSTED_PROXIES')!r} with ingress.enabled={merged['ingress']['enabled']}, expected {want!r}")
        elif "TRUSTED_PROXIES" in plain:
            fail(f"{where}: TRUSTED_PROXIES is the gateway's setting")
        if s == "user" and merged["admin"]["username"]:
            needs |= {"ADMIN_PASSWORD"}
            if not plain.get("ADMIN_USERNAME") or not plain.get("ADMIN_EMAIL"):
                fail(f"{where}: admin.username is set but ADMIN_USERNAME/ADMIN_EMAIL are not")
        if s in NATS_SERVICES:
            if not plain.get("NATS_ADDR", "").startswith("nats://"):
                fail(f"{where}: NATS_ADDR={plain.get('NATS_ADDR')!r}")
            if plain.get("NATS_SUBJECT_PREFIX") != merged["events"]["subjectPrefix"]:
                fail(f"{where}: NATS_SUBJECT_PREFIX={plain.get('NATS_SUBJECT_PREFIX')!r}, events.subjectPrefix is {merged['events']['subjectPrefix']!r}")
        elif any(name.startswith("NATS_") for name in plain):
            fail(f"{where}: sets {sorted(n for n in plain if n.startswith('NATS_'))}, but {s} does not use NATS")
        for v in needs:
            ref = (refs.get(v) or {}).get("secretKeyRef")
            if not ref:
                fail(f"{where}: {v} does not come from a Secret")
            if secret_name and ref["name"] != secret_name:
                fail(f"{where}: {v} comes from Secret {ref['name']}, not secrets.existingSecret {secret_name}")
            if ref.get("optional"):
                fail(f"{where}: {v} is optional")
        for v, src in refs.items():
            if v not in needs or "secretKeyRef" not in src:
                fail(f"{where}: {v} comes from {src}, but the service reads no such secret")
    for cm in configmaps.values():
        leaked = SECRET_VARS & set(cm.get("data") or {})
        if leaked:
            fail(f"{origin}: ConfigMap/{cm['metadata']['name']} holds {sorted(leaked)}; secrets come from a Secret")
    # production: nothing secret in the release itself; development without
    # existingSecret: one Secret with every key the pods read, kept on uninstall
    # (the PostgreSQL volume outlives the release and keeps its password).
    secrets = by_kind.get("Secret", {})
    if not wants["secret"] and secrets:
        fail(f"{origin}: appEnv={merged['appEnv']} with existingSecret={merged['secrets']['existingSecret']!r} renders a Secret: {sorted(secrets)}")
    if wants["secret"]:
        if len(secrets) != 1:
            fail(f"{origin}: the development profile without existingSecret renders Secrets {sorted(secrets)}, expected one")
        secret = next(iter(secrets.values()))
        if (secret["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
            fail(f"{origin}: the generated Secret is not kept by `helm uninstall` (helm.sh/resource-policy: keep)")
        data = secret.get("stringData") or {}
        pods = list(by_kind.get("Deployment", {}).values()) + list(by_kind.get("StatefulSet", {}).values())
        read = {ref["secretKeyRef"]["key"] for d in pods
                for c in pod_spec(d)["containers"] for e in c.get("env") or [] for ref in [e.get("valueFrom") or {}]
                if "secretKeyRef" in ref and ref["secretKeyRef"]["name"] == secret["metadata"]["name"]}
        if read - set(data):
            fail(f"{origin}: pods read keys {sorted(read - set(data))} the generated Secret lacks")
        keys = merged["secrets"]["keys"]
        for value, minimum in (("jwtSecret", 32), ("internalAuthToken", 32), ("dbPassword", 16)):
            if len(data.get(keys[value], "")) < minimum:
                fail(f"{origin}: the generated Secret's {keys[value]} is shorter than {minimum}")
    if merged["networkPolicy"]["enabled"]:
        check_network_policies(by_kind, merged, origin)
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    for s, d in deployments.items():
        auto = dict(merged["autoscaling"])
        auto.update(merged["services"][s].get("autoscaling") or {})
        has_hpa = d["metadata"]["name"] in hpas
        if bool(auto.get("enabled")) != has_hpa:
            fail(f"{origin}: {s}: autoscaling.enabled={auto.get('enabled')} but HPA rendered={has_hpa}")
        if has_hpa and "replicas" in d["spec"]:
            fail(f"{origin}: {s}: both an HPA and a fixed replicas count")
    check_availability(by_kind, deployments, merged, origin)
    for dep, kind in (("postgresql", "StatefulSet"), ("nats", "StatefulSet")):
        rendered = any(dep == d["metadata"]["labels"].get("app.kubernetes.io/component")
                       for d in by_kind.get(kind, {}).values())
        if rendered != wants[dep]:
            fail(f"{origin}: appEnv={merged['appEnv']}, {dep}.enabled={merged[dep]['enabled']}: its StatefulSet rendered={rendered}, expected {wants[dep]}")
    migrations = [j for j in by_kind.get("Job", {}).values()
                  if j["metadata"]["labels"]["app.kubernetes.io/component"].endswith("-migrate")]
    want_migrations = bool(merged["migrations"]["enabled"]) and not wants["postgresql"] and not wants["secret"]
    if bool(migrations) != want_migrations:
        fail(f"{origin}: migration Jobs rendered={bool(migrations)}, expected {want_migrations} (they precede the release's own database and Secret)")
    for job in migrations:
        c = pod_spec(job)["containers"][0]
        if c.get("args") != ["migrate"] or c.get("command"):
            fail(f"{origin}: Job {job['metadata']['name']} does not run `<service> migrate`")
        hooks = (job["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
        if set(hooks.split(",")) != {"pre-install", "pre-upgrade"}:
            fail(f"{origin}: Job {job['metadata']['name']}: hook {hooks!r}")
        # A pre-install hook runs before the release's own objects exist.
        jspec = pod_spec(job)
        if jspec.get("serviceAccountName") in by_kind.get("ServiceAccount", {}):
            fail(f"{origin}: Job {job['metadata']['name']} uses the release's ServiceAccount, which a pre-install hook precedes")
        if any("configMapRef" in src for src in c.get("envFrom") or []):
            fail(f"{origin}: Job {job['metadata']['name']} reads the release's ConfigMap, which a pre-install hook precedes")
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["name"] in by_kind.get("Secret", {}):
                fail(f"{origin}: Job {job['metadata']['name']} reads the release's Secret {ref['name']}, which a pre-install hook precedes")
        plain, refs = container_env(c, configmaps)
        if "DB_PASSWORD" not in refs or not plain.get("DB_HOST"):
            fail(f"{origin}: Job {job['metadata']['name']} lacks the database settings")
        for name in list(plain) + list(refs):
            if not env_name_known(name, known):
                fail(f"{origin}: Job {job['metadata']['name']} sets {name}, which no service reads")


def check_availability(by_kind: dict, deployments: dict[str, dict], merged: dict, origin: str) -> None:
    """Every service: a PDB of its own (podDisruptionBudget.enabled), spread
    over topologySpread.topologyKey, a preStop pause that leaves time within
    the grace period to drain, and resources on its container."""
    pdbs = by_kind.get("PodDisruptionBudget", {}).values()
    sleep = merged["lifecycle"]["preStopSleepSeconds"]
    for s, d in deployments.items():
        where = f"{origin}: Deployment/{d['metadata']['name']}"
        labels, spec = pod_labels(d), pod_spec(d)
        mine = [p for p in pdbs if selector_matches(p["spec"]["selector"], labels)]
        if merged["podDisruptionBudget"]["enabled"] and len(mine) != 1:
            fail(f"{where}: {len(mine)} PodDisruptionBudgets select it, expected 1")
        if not merged["podDisruptionBudget"]["enabled"] and mine:
            fail(f"{where}: a PodDisruptionBudget though podDisruptionBudget.enabled is false")
        spread = spec.get("topologySpreadConstraints") or []
        if merged["topologySpread"]["enabled"] and not any(
                c["topologyKey"] == merged["topologySpread"]["topologyKey"] and selector_matches(c["labelSelector"], labels)
                and c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread):
            fail(f"{where}: not spread over {merged['topologySpread']['topologyKey']} (best effort) by its own labels: {spread}")
        c = spec["containers"][0]
        pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command")
        if sleep and pre != ["/usr/local/bin/busybox", "sleep", str(sleep)]:
            fail(f"{where}: preStop {pre}, expected a {sleep} s busybox sleep")
        if sleep and spec["terminationGracePeriodSeconds"] <= sleep:
            fail(f"{where}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} leaves no time to drain after the {sleep} s preStop")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if not c.get(probe):
                fail(f"{where}: no {probe}")
        res = c.get("resources") or {}
        if not {"cpu", "memory"} <= set(res.get("requests") or {}) or "memory" not in (res.get("limits") or {}):
            fail(f"{where}: resources {res} lack cpu/memory requests or a memory limit")


# The release's own pods that call the gateway's API: `helm test` and loadgen.
GATEWAY_CLIENTS = ["test", "loadgen"]


def release_clients_peer(merged: dict) -> dict:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ecommerce", "app.kubernetes.io/instance": "ci"},
                            "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": GATEWAY_CLIENTS}]}}


def check_helm_tests(chart: helm.Chart, ci: dict) -> None:
    """`helm test`: two test-hook Pods of the gateway's image, one reading
    /readyz, one GET /products, both on the gateway's Service, both deleted
    when they pass; with gatewayFrom the gateway's NetworkPolicy admits them."""
    for label, values in (("defaults", None), ("all-features", ci.get("all-features-values"))):
        docs = rendered_docs(render(chart, values))
        tests = [d for d in docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
        if sorted(d["kind"] for d in tests) != ["Pod", "Pod"]:
            fail(f"{label}: test hooks {[(d['kind'], d['metadata']['name']) for d in tests]}, expected two Pods")
        gateway = next(d for d in docs if d["kind"] == "Service" and d["spec"]["selector"].get("app.kubernetes.io/component") == "gateway")
        base = f"http://{gateway['metadata']['name']}:{PORTS['gateway']}"
        commands = {" ".join(pod_spec(d)["containers"][0]["command"]) for d in tests}
        for path in ("/readyz", "/products"):
            if not any(f"{base}{path}" in c for c in commands):
                fail(f"{label}: no test reads {base}{path}: {sorted(commands)}")
        for d in tests:
            spec = pod_spec(d)
            if spec.get("restartPolicy") != "Never" or "hook-succeeded" not in d["metadata"]["annotations"].get("helm.sh/hook-delete-policy", ""):
                fail(f"{label}: {d['metadata']['name']} is retried or kept after passing")
            if not re.fullmatch(r"(.+/)?ecommerce/gateway:[^:/]+", spec["containers"][0]["image"]):
                fail(f"{label}: {d['metadata']['name']} runs {spec['containers'][0]['image']}, not the gateway's image")
            if pod_labels_of(d).get("app.kubernetes.io/component") not in GATEWAY_CLIENTS:
                fail(f"{label}: {d['metadata']['name']} is not labelled as a release client of the gateway")
        merged = chart.merge_values(copy.deepcopy(values))
        if merged["networkPolicy"]["enabled"] and merged["networkPolicy"]["gatewayFrom"]:
            policy = next(d for d in docs if d["kind"] == "NetworkPolicy"
                          and d["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "gateway")
            for d in tests:
                if not any(selector_matches(p["podSelector"], pod_labels_of(d))
                           for r in policy["spec"]["ingress"] for p in r.get("from") or [] if "podSelector" in p and "namespaceSelector" not in p):
                    fail(f"{label}: the gateway's NetworkPolicy (gatewayFrom set) does not admit {d['metadata']['name']}")


def loadgen_cli() -> tuple[set[str], set[str]]:
    """The flags and scenarios of tools/loadgen's clap Args."""
    text = (ROOT / "tools/loadgen/src/main.rs").read_text()
    args = re.search(r"struct Args \{(.*?)\n\}", text, re.S).group(1)
    flags = {"--" + f.replace("_", "-") for f in re.findall(r"#\[arg\((?:[^()]|\([^()]*\))*\)\]\s*(\w+)\s*:", args, re.S)}
    enum = re.search(r"enum Scenario \{(.*?)\n\}", text, re.S).group(1)
    scenarios = {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in re.findall(r"^\s*([A-Z]\w*),", enum, re.M)}
    if "--base-url" not in flags or "mix" not in scenarios:
        fail(f"tools/loadgen/src/main.rs: found flags {sorted(flags)}, scenarios {sorted(scenarios)}")
    return flags, scenarios


def check_loadgen(chart: helm.Chart, ci: dict) -> None:
    """Off by default; on, one Job of the loadgen image that waits for the
    gateway's Service and runs loadgen against it with flags and a scenario
    its clap Args know, as the admin; its name changes with its settings;
    refused without an admin; admitted by the gateway's NetworkPolicy."""
    flags, scenarios = loadgen_cli()
    if set(chart.values["loadgen"]) - {"enabled", "extraArgs", "backoffLimit", "resources"} - {f[2:] for f in flags}:
        fail(f"values loadgen.* name settings loadgen has no flag for: {sorted(chart.values['loadgen'])}")
    schema = chart.schema["properties"]["loadgen"]["properties"]["scenario"]["enum"]
    if set(schema) != scenarios:
        fail(f"values.schema.json's loadgen.scenario {sorted(schema)}, loadgen's {sorted(scenarios)}")

    def jobs(values):
        return [d for d in rendered_docs(render(chart, values)) if d["kind"] == "Job"
                and d["metadata"]["labels"]["app.kubernetes.io/component"] == "loadgen"]
    if jobs(None):
        fail("a loadgen Job is rendered by default")
    must_fail_render(chart, {"loadgen": {"enabled": True}}, "admin.username")
    values = copy.deepcopy(ci["all-features-values"])
    docs = rendered_docs(render(chart, values))
    job, = [d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "loadgen"]
    spec = pod_spec(job)
    c, = spec["containers"]
    gateway = next(d for d in docs if d["kind"] == "Service" and d["spec"]["selector"].get("app.kubernetes.io/component") == "gateway")
    base = f"http://{gateway['metadata']['name']}:{PORTS['gateway']}"
    args = dict(zip(c["args"][::2], c["args"][1::2]))
    lg = chart.merge_values(copy.deepcopy(values))["loadgen"]
    want = {"--base-url": base, "--scenario": lg["scenario"], "--rate": str(lg["rate"]), "--vus": str(lg["vus"]),
            "--duration": lg["duration"], "--warmup": lg["warmup"]}
    if args != want or set(args) - flags:
        fail(f"loadgen args {c['args']}, expected {want} (flags of loadgen: {sorted(flags)})")
    if not re.fullmatch(r"(.+/)?ecommerce/loadgen:[^:/]+", c["image"]) or c.get("command"):
        fail(f"the Job runs {c['image']} {c.get('command')}, not the loadgen image's entrypoint")
    if not any(f"{base}/readyz" in " ".join(i.get("command") or []) for i in spec.get("initContainers") or []):
        fail("the Job does not wait for the gateway before its set-up")
    env = {e["name"]: e for e in c.get("env") or []}
    ref = (env.get("ADMIN_PASSWORD", {}).get("valueFrom") or {}).get("secretKeyRef") or {}
    secret = next(d for d in docs if d["kind"] == "Secret")
    if env.get("ADMIN_USERNAME", {}).get("value") != values["admin"]["username"] or ref.get("name") != secret["metadata"]["name"]:
        fail(f"the Job does not log in as admin.username with the release Secret's ADMIN_PASSWORD: {c.get('env')}")
    same = jobs(values)[0]["metadata"]["name"]
    values["loadgen"]["rate"] = values["loadgen"]["rate"] + 1
    if same != job["metadata"]["name"] or jobs(values)[0]["metadata"]["name"] == same:
        fail("the Job's name does not follow its settings (an upgrade could not replace it)")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy"
                  and d["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "gateway")
    if not any(selector_matches(p["podSelector"], pod_labels(job)) for r in policy["spec"]["ingress"]
               for p in r.get("from") or [] if "podSelector" in p and "namespaceSelector" not in p):
        fail("the gateway's NetworkPolicy (gatewayFrom set) does not admit the loadgen Job")


def pod_labels_of(doc: dict) -> dict:
    return doc["metadata"].get("labels") or {} if doc["kind"] == "Pod" else pod_labels(doc)


def peer_component(peer: dict) -> str | None:
    """The chart component a pod-selector peer of the same namespace picks."""
    if "namespaceSelector" in peer or "ipBlock" in peer:
        return None
    return ((peer.get("podSelector") or {}).get("matchLabels") or {}).get("app.kubernetes.io/component")


def check_network_policies(by_kind: dict, merged: dict, origin: str) -> None:
    """Ingress: each service's API from its callers only (the gateway's from
    anywhere or gatewayFrom), its metrics port from metricsFrom only. Egress:
    DNS, exactly the services it calls, PostgreSQL for the database services
    only, NATS for the services that use it only, the OTLP collector when
    tracing is configured. The in-cluster PostgreSQL and NATS admit exactly
    the services (and migration Jobs) that use them."""
    policies = {d["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component"): d
                for d in by_kind.get("NetworkPolicy", {}).values()}
    nats_port = 4222
    wants = profile(merged)
    if not wants["nats"]:
        m = re.search(r":(\d+)$", merged["externalNats"]["url"].split("://", 1)[-1].split("/")[0])
        nats_port = int(m.group(1)) if m else 4222
    db_port = 5432 if wants["postgresql"] else merged["externalDatabase"]["port"]
    otlp = merged["tracing"]["otlpEndpoint"]
    otlp_port = None
    if otlp:
        m = re.search(r":(\d+)$", otlp.split("://", 1)[-1].split("/")[0])
        otlp_port = int(m.group(1)) if m else 4317
    pods = [pod_labels(d) for kind in ("Deployment", "StatefulSet") for d in by_kind.get(kind, {}).values()]
    for s in SERVICES:
        pol = policies.get(s)
        where = f"{origin}: NetworkPolicy {s}"
        if pol is None:
            fail(f"{origin}: no NetworkPolicy for {s}")
        peers = [p for r in pol["spec"].get("ingress") or [] for p in r.get("from") or []]
        peers += [p for r in pol["spec"].get("egress") or [] for p in r.get("to") or []]
        for peer in peers:
            if peer_component(peer) and not any(selector_matches(peer["podSelector"], labels) for labels in pods):
                fail(f"{where}: peer {peer['podSelector']} selects no pod of the chart")
        if pol["spec"].get("policyTypes") != ["Ingress", "Egress"]:
            fail(f"{where}: policyTypes {pol['spec'].get('policyTypes')}, expected [Ingress, Egress]")
        admitted = set()
        metrics_rule = False
        for rule in pol["spec"].get("ingress") or []:
            ports = {p["port"] for p in rule.get("ports") or []}
            if ports == {METRICS_PORTS[s]}:
                if rule.get("from") != merged["networkPolicy"]["metricsFrom"]:
                    fail(f"{where}: the metrics port admits {rule.get('from')}, not metricsFrom")
                metrics_rule = True
                continue
            if ports != {PORTS[s]}:
                fail(f"{where}: an ingress rule for ports {ports}: the scrapers reach only {METRICS_PORTS[s]}, callers only {PORTS[s]}")
            if s != "gateway" and not rule.get("from"):
                fail(f"{where} admits everyone")
            if s == "gateway" and rule.get("from") == [release_clients_peer(merged)] and merged["networkPolicy"]["gatewayFrom"]:
                continue
            if s == "gateway" and rule.get("from") != (merged["networkPolicy"]["gatewayFrom"] or None):
                fail(f"{where}: the API admits {rule.get('from')}, not gatewayFrom")
            for peer in rule.get("from") or []:
                if peer_component(peer):
                    admitted.add(peer_component(peer))
        if s != "gateway" and admitted != CALLERS[s]:
            fail(f"{where} admits {sorted(admitted)}, its callers are {sorted(CALLERS[s])}")
        if bool(merged["networkPolicy"]["metricsFrom"]) != metrics_rule:
            fail(f"{where}: metrics port rule present={metrics_rule}, metricsFrom={merged['networkPolicy']['metricsFrom']}")
        egress = pol["spec"].get("egress") or []
        dns = any({(p["port"], p.get("protocol", "TCP")) for p in r.get("ports") or []} >= {(53, "UDP"), (53, "TCP")}
                  for r in egress)
        if not dns:
            fail(f"{where}: egress does not allow DNS (53/UDP and 53/TCP)")
        reached = set()
        open_ports = set()
        for rule in egress:
            ports = {p["port"] for p in rule.get("ports") or []}
            if not ports:
                fail(f"{where}: an egress rule without ports opens every port")
            if ports == {53}:
                continue
            peers = rule.get("to") or []
            if not peers:
                open_ports |= ports
            for peer in peers:
                comp = peer_component(peer)
                if comp in PORTS:
                    if ports != {PORTS[comp]}:
                        fail(f"{where}: egress to {comp} on {ports}, expected {{{PORTS[comp]}}}")
                    reached.add(comp)
                elif comp == "postgresql":
                    open_ports.add(5432)
                elif comp == "nats":
                    open_ports.add(4222)
                else:
                    fail(f"{where}: egress to an unexpected peer {peer}")
        if reached != CALLS.get(s, set()):
            fail(f"{where}: egress to {sorted(reached)}, it calls {sorted(CALLS.get(s, set()))}")
        expected_open = set()
        if s in DB_SERVICES:
            expected_open.add(db_port)
        if s in NATS_SERVICES:
            expected_open.add(nats_port)
        if otlp_port:
            expected_open.add(otlp_port)
        if open_ports != expected_open:
            fail(f"{where}: egress opens ports {sorted(open_ports)} outside its calls, expected {sorted(expected_open)} (PostgreSQL, NATS, OTLP)")
    for dep, port, users in (("postgresql", 5432, DB_SERVICES | {f"{s}-migrate" for s in DB_SERVICES}),
                             ("nats", 4222, NATS_SERVICES)):
        if not wants[dep]:
            continue
        pol = policies.get(dep)
        where = f"{origin}: NetworkPolicy {dep}"
        if pol is None:
            fail(f"{origin}: no NetworkPolicy for the in-cluster {dep}")
        admitted = set()
        for rule in pol["spec"].get("ingress") or []:
            if {p["port"] for p in rule.get("ports") or []} != {port}:
                continue
            if not rule.get("from"):
                fail(f"{where} admits everyone to {port}")
            for peer in rule["from"]:
                sel = peer.get("podSelector") or {}
                if "namespaceSelector" in peer or "ipBlock" in peer or not sel:
                    fail(f"{where}: port {port} admits {peer}")
                comps = set()
                if "app.kubernetes.io/component" in (sel.get("matchLabels") or {}):
                    comps.add(sel["matchLabels"]["app.kubernetes.io/component"])
                for expr in sel.get("matchExpressions") or []:
                    if expr.get("key") == "app.kubernetes.io/component" and expr.get("operator") == "In":
                        comps |= set(expr.get("values") or [])
                if not comps:
                    fail(f"{where}: port {port} admits every pod of {sel}")
                admitted |= comps
        if admitted != users:
            fail(f"{where} admits {sorted(admitted)} to {port}, its users are {sorted(users)}")


def k8s_docs_of(path: str) -> list[dict]:
    return load_docs((ROOT / path).read_text(), path)


def check_operator_rbac(chart: helm.Chart) -> None:
    manifest_rules = next(d for d in k8s_docs_of("k8s/operator/10-rbac.yaml") if d["kind"] == "ClusterRole")["rules"]
    cluster = rendered_docs(render(chart, None, name="ecommerce-operator", namespace="ecommerce-operator"))
    role = next((d for d in cluster if d["kind"] == "ClusterRole"), None)
    if role is None or role["rules"] != manifest_rules:
        fail(f"cluster-wide: the ClusterRole's rules differ from k8s/operator/10-rbac.yaml's: {role and role['rules']}")
    scoped = rendered_docs(render(chart, {"watchNamespace": "shop"}, name="ecommerce-operator", namespace="ecommerce-operator"))
    cluster_kinds = [d["kind"] for d in scoped if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    if cluster_kinds:
        fail(f"watchNamespace=shop still renders {cluster_kinds}")
    stack_roles = [d for d in scoped if d["kind"] == "Role" and d["metadata"].get("namespace") == "shop"]
    if len(stack_roles) != 1 or stack_roles[0]["rules"] != manifest_rules:
        fail(f"watchNamespace=shop: expected one Role in shop with the operator's rules, got {stack_roles}")
    bindings = [d for d in scoped if d["kind"] == "RoleBinding" and d["metadata"].get("namespace") == "shop"]
    if len(bindings) != 1 or bindings[0]["subjects"][0]["namespace"] != "ecommerce-operator":
        fail(f"watchNamespace=shop: the RoleBinding in shop does not bind the operator's ServiceAccount: {bindings}")
    dep = next(d for d in scoped if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in pod_spec(dep)["containers"][0]["env"]}
    if env.get("WATCH_NAMESPACE") != "shop":
        fail("watchNamespace=shop does not set WATCH_NAMESPACE")


def check_operator_install_parity(chart: helm.Chart) -> None:
    manifest = next(d for d in k8s_docs_of("k8s/operator/20-deployment.yaml") if d["kind"] == "Deployment")
    docs = rendered_docs(render(chart, None, name="ecommerce-operator", namespace="ecommerce-operator"))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    for field in (("metadata", "name"), ("metadata", "namespace"), ("spec", "selector")):
        a, b = dep[field[0]].get(field[1]), manifest[field[0]].get(field[1])
        if a != b:
            fail(f"{'.'.join(field)}: chart {a!r}, k8s/operator {b!r}: switching install method would hit an immutable field")
    if pod_spec(dep)["serviceAccountName"] != pod_spec(manifest)["serviceAccountName"]:
        fail("the ServiceAccounts differ")



# --------------------------------------------------------------------------
# one deployment shape: the chart and the operator render the same objects

SHAPE_VALUES = ROOT / "charts/ecommerce/ci/operator-shape-values.yaml"
SHAPE_STACK = ROOT / "services/operator/tests/chart-shape-stack.yaml"
STACK_SERVICES = ("gateway", "inventory", "order", "user", "producer", "consumer")


def operator_render(stack_file: Path) -> list[dict]:
    """The objects the operator would apply for a stack (its `render` binary)."""
    out = subprocess.run(["cargo", "run", "-q", "-p", "operator", "--bin", "render", "--", str(stack_file)],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"operator render {stack_file.name}: {out.stderr.strip()[-400:]}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def env_sources(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    """Each variable a container gets and whether it is a secret or a setting
    (ConfigMap key, envFrom or plain value: how differs between the two)."""
    sources = {}
    for src in container.get("envFrom") or []:
        for key in (configmaps[src["configMapRef"]["name"]].get("data") or {}):
            sources[key] = "setting"
    for e in container.get("env") or []:
        secret = (e.get("valueFrom") or {}).get("secretKeyRef")
        sources[e["name"]] = f"secret {secret['key']}" if secret else "setting"
    return sources


def env_values(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    """The plain values a container's settings have (ConfigMap keys resolved)."""
    values = {}
    for src in container.get("envFrom") or []:
        values.update(configmaps[src["configMapRef"]["name"]].get("data") or {})
    for e in container.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
        if "value" in e:
            values[e["name"]] = e["value"]
        elif ref:
            values[e["name"]] = (configmaps[ref["name"]].get("data") or {}).get(ref["key"])
    return values


def documented_defaults() -> dict[str, str]:
    """docs/configuration.md's defaults, from its generated tables."""
    defaults = {}
    for line in (ROOT / "docs/configuration.md").read_text().splitlines():
        m = re.match(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|", line)
        if m:
            defaults[m.group(1)] = m.group(2)
    return defaults


# The operator's stack-only settings: its durable consumer is the stack's own
# (two stacks on one NATS must not share it; the chart's release uses the default).
OPERATOR_ONLY_SETTINGS = {"NATS_CONSUMER_NAME"}
# Settings that carry names, which differ by design (the chart's
# <release>-ecommerce-<service>, the operator's <stack>-<service>; the
# operator's per-stack stream and prefix); every other value must be equal.
NAMED_SETTINGS = {"API_GATEWAY_ADDR", "INVENTORY_ADDR", "ORDER_ADDR", "USER_ADDR", "PRODUCER_ADDR",
                  "CONSUMER_ADDR", "NATS_STREAM", "NATS_SUBJECT_PREFIX"}


def explained_env(chart_c: dict, op_c: dict, configmaps: dict[str, dict], where: str) -> list[str]:
    """Variables one side sets and the other does not: fine only when the
    chart sets a service's documented default, or the operator a setting of
    OPERATOR_ONLY_SETTINGS."""
    a, b = env_sources(chart_c, configmaps), env_sources(op_c, configmaps)
    defaults, chart_values = documented_defaults(), env_values(chart_c, configmaps)
    problems = []
    for name in sorted(set(a) - set(b)):
        if name not in defaults or chart_values.get(name) != defaults[name]:
            problems.append(f"{where}: {name} only in the chart ({chart_values.get(name)!r}, documented default {defaults.get(name)!r})")
    for name in sorted(set(b) - set(a) - OPERATOR_ONLY_SETTINGS):
        problems.append(f"{where}: {name} only in the operator")
    op_values = env_values(op_c, configmaps)
    for name in sorted(set(a) & set(b)):
        if a[name] != b[name]:
            problems.append(f"{where}: {name} is a {a[name]} in the chart, a {b[name]} in the operator")
        elif name not in NAMED_SETTINGS and chart_values.get(name) != op_values.get(name):
            problems.append(f"{where}: {name} is {chart_values.get(name)!r} in the chart, {op_values.get(name)!r} in the operator")
    return problems


def pod_shape(doc: dict, configmaps: dict[str, dict], origin: str) -> dict:
    """A workload's pod template with what differs by design taken out and
    checked on its own: names (labels, ServiceAccount, ConfigMaps, Secrets),
    the image's registry, the hash annotation."""
    template = copy.deepcopy(doc["spec"]["template"])
    labels = template["metadata"].get("labels") or {}
    spec = template["spec"]
    if not spec.pop("serviceAccountName", None):
        fail(f"{origin}: {doc['metadata']['name']} runs as the namespace's default ServiceAccount")
    for tsc in spec.get("topologySpreadConstraints") or []:
        if not selector_matches(tsc.pop("labelSelector", {}), labels):
            fail(f"{origin}: {doc['metadata']['name']}: topology spread counts other pods than its own")
    containers = []
    for c in spec.pop("containers"):
        c = dict(c)
        c.pop("env", None)
        c.pop("envFrom", None)
        c["image"] = c["image"].rsplit("/", 1)[-1]
        containers.append(c)
    annotations = template["metadata"].get("annotations") or {}
    return {"pod": spec, "containers": containers,
            "annotations": {k: v for k, v in annotations.items() if not ("hash" in k or "checksum" in k)}}


def diff(a, b, path="") -> list[str]:
    """Where two JSON values differ, as paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: {'chart' if k in a else 'operator'} only ({a.get(k, b.get(k))!r:.120})")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: chart {a!r:.160} / operator {b!r:.160}"]


def check_operator_chart_shape(chart: helm.Chart) -> None:
    values = yaml.safe_load(SHAPE_VALUES.read_text())
    chart_docs = [d for d in rendered_docs(render(chart, values, name="shop", namespace="shop"))
                  if "helm.sh/hook" not in (d["metadata"].get("annotations") or {}) or d["kind"] == "Job"]
    operator_docs = operator_render(SHAPE_STACK)
    problems = shape_differences(chart_docs, operator_docs)
    if problems:
        fail(f"{len(problems)} differences between the chart ({SHAPE_VALUES.relative_to(ROOT)}) and the operator "
             f"({SHAPE_STACK.relative_to(ROOT)}):\n  " + "\n  ".join(problems[:40]))
    # The comparison itself can see a difference: one probe's timing changed.
    changed = copy.deepcopy(operator_docs)
    deployment = next(d for d in changed if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] += 1
    if not shape_differences(chart_docs, changed):
        fail("the comparison does not see a changed readiness probe")


def shape_differences(chart_docs: list[dict], operator_docs: list[dict]) -> list[str]:
    """How the chart's objects and the operator's differ, as paths."""
    def by_service(docs, kind, service_of):
        return {service_of(d): d for d in docs if d["kind"] == kind and service_of(d) in STACK_SERVICES}

    # The chart names a service by component, the operator by name.
    chart_service = lambda d: (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
    op_service = lambda d: (d["metadata"].get("labels") or {}).get("app.kubernetes.io/name")
    migrate = lambda f: (lambda d: (f(d) or "").removesuffix("-migrate"))
    configmaps = {d["metadata"]["name"]: d for docs in (chart_docs, operator_docs) for d in docs if d["kind"] == "ConfigMap"}
    problems = []
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job"):
        ours = by_service(chart_docs, kind, migrate(chart_service) if kind == "Job" else chart_service)
        theirs = by_service(operator_docs, kind, migrate(op_service) if kind == "Job" else op_service)
        if sorted(ours) != sorted(theirs) or not ours:
            problems.append(f"{kind}: the chart renders one for {sorted(ours)}, the operator for {sorted(theirs)}")
            continue
        for service, c in ours.items():
            o = theirs[service]
            if kind in ("Deployment", "Job"):
                a, b = pod_shape(c, configmaps, "chart"), pod_shape(o, configmaps, "operator")
                spec_a = {k: v for k, v in c["spec"].items() if k not in ("template", "selector")}
                spec_b = {k: v for k, v in o["spec"].items() if k not in ("template", "selector")}
                if kind == "Job":
                    # The chart's are hooks, deleted by Helm; the operator's
                    # stay a day for inspection.
                    spec_b.pop("ttlSecondsAfterFinished", None)
                problems += [f"{kind} {service} {d}" for d in diff(spec_a, spec_b, ".spec") + diff(a, b, ".template")]
                for ca, cb in zip(c["spec"]["template"]["spec"]["containers"], o["spec"]["template"]["spec"]["containers"]):
                    problems += explained_env(ca, cb, configmaps, f"{kind} {service} env")
            else:
                spec_a, spec_b = copy.deepcopy(c["spec"]), copy.deepcopy(o["spec"])
                for spec in (spec_a, spec_b):
                    spec.pop("selector", None)
                    (spec.get("scaleTargetRef") or {}).pop("name", None)
                problems += [f"{kind} {service} {d}" for d in diff(spec_a, spec_b, ".spec")]
    # The services' ServiceAccount: one, mounting no token, on both sides.
    accounts = [[d for d in docs if d["kind"] == "ServiceAccount"] for docs in (chart_docs, operator_docs)]
    for side, found in zip(("chart", "operator"), accounts):
        if len(found) != 1 or found[0].get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount: the {side} renders {len(found)}, or one that mounts its token")
    # (The chart's migration Jobs are hooks that run before its ServiceAccount
    # exists, as the namespace's default; their pods mount no token either.)
    used = [{pod_spec(d).get("serviceAccountName") for d in docs if d["kind"] in kinds}
            for docs, kinds in ((chart_docs, ("Deployment",)), (operator_docs, ("Deployment", "Job")))]
    for side, names, found in zip(("chart", "operator"), used, accounts):
        if found and names != {found[0]["metadata"]["name"]}:
            problems.append(f"ServiceAccount: the {side}'s pods run as {sorted(map(str, names))}, not its own")
    # NetworkPolicies: the same ports in and out, from and to the same services.
    chart_pods = {chart_service(d): pod_labels(d) for d in chart_docs if d["kind"] == "Deployment"}
    op_pods = {op_service(d): pod_labels(d) for d in operator_docs if d["kind"] == "Deployment"}

    def peers(rule, pods):
        named = []
        for p in rule.get("from") or rule.get("to") or []:
            sel = p.get("podSelector")
            hits = sorted(s for s, labels in pods.items() if sel is not None and selector_matches(sel, labels))
            # A peer named by the pods it selects here, when it selects some
            # of the stack's in its own namespace; any other peer as written.
            named.append(hits if sel is not None and hits and "namespaceSelector" not in p else p)
        return sorted(named, key=lambda n: json.dumps(n, sort_keys=True))

    def policy_shape(doc, pods):
        spec = doc["spec"]
        selects = sorted(s for s, labels in pods.items() if selector_matches(spec.get("podSelector") or {}, labels))
        return {direction: sorted((json.dumps(r.get("ports"), sort_keys=True), json.dumps(peers(r, pods), sort_keys=True))
                                  for r in spec.get(direction) or [])
                for direction in ("ingress", "egress")} | {"policyTypes": spec.get("policyTypes"), "selects": selects}

    ours = by_service(chart_docs, "NetworkPolicy", chart_service)
    theirs = by_service(operator_docs, "NetworkPolicy", op_service)
    for service in STACK_SERVICES:
        if service not in ours or service not in theirs:
            problems.append(f"NetworkPolicy {service}: chart {service in ours}, operator {service in theirs}")
            continue
        problems += [f"NetworkPolicy {service} {d}"
                     for d in diff(policy_shape(ours[service], chart_pods), policy_shape(theirs[service], op_pods))]
    return problems


def check_default_profile(chart: helm.Chart) -> None:
    manifests = render(chart, None)
    docs = rendered_docs(manifests)
    components = {(d["kind"], d["metadata"]["labels"].get("app.kubernetes.io/component")) for d in docs}
    for want in (("StatefulSet", "postgresql"), ("StatefulSet", "nats"), ("Secret", "secrets")):
        if want not in components:
            fail(f"the defaults render no {want[0]} {want[1]}")
    env = {d["data"].get("APP_ENV") for d in docs if d["kind"] == "ConfigMap"}
    if env != {"development"}:
        fail(f"the defaults set APP_ENV {sorted(env)}")
    if any(d["kind"] == "Job" for d in docs):
        fail("the defaults render hook Jobs that would precede their database")
    if "DEVELOPMENT PROFILE" not in manifests["ecommerce/templates/NOTES.txt"]:
        fail("NOTES.txt does not say the defaults are the development profile")


def check_generated_secret(chart_dir: Path) -> None:
    """`lookup` returns nothing without a cluster, so the chart's one call of
    it (ecommerce.existingSecretData) is replaced in a copy by the data of a
    Secret the release already has: an upgrade must keep every value."""
    def secret_of(chart, values=None, **kw):
        docs = rendered_docs(render(chart, values, **kw))
        return next(d for d in docs if d["kind"] == "Secret")["stringData"]
    chart = helm.Chart.load(str(chart_dir))
    first, second = secret_of(chart), secret_of(chart)
    if any(first[k] == second[k] for k in first):
        fail(f"two installs share generated values: {sorted(k for k in first if first[k] == second[k])}")
    helpers = (chart_dir / "templates/_helpers.tpl").read_text()
    define = re.search(r'(\{\{- define "ecommerce.existingSecretData" -\}\}\n)(.*?)(\n\{\{- end \}\})', helpers, re.S)
    if not define or "lookup" not in define.group(2) or helpers.count("lookup ") != 1:
        fail("templates/_helpers.tpl: expected the chart's only lookup in ecommerce.existingSecretData")
    if any("lookup " in p.read_text() for p in (chart_dir / "templates").glob("*.yaml")):
        fail("a template calls lookup outside ecommerce.existingSecretData")
    import base64
    kept = {k: f"kept-{k}-" + "x" * 40 for k in ("DB_PASSWORD", "JWT_SECRET", "INTERNAL_AUTH_TOKEN", "ADMIN_PASSWORD")}
    stub = "{{- toYaml (dict " + " ".join(f'"{k}" "{base64.b64encode(v.encode()).decode()}"' for k, v in kept.items()) + ") }}"
    with tempfile.TemporaryDirectory(prefix="packaging-") as tmp:
        copy_dir = Path(tmp) / "ecommerce"
        shutil.copytree(chart_dir, copy_dir)
        (copy_dir / "templates/_helpers.tpl").write_text(helpers.replace(define.group(0), define.group(1) + stub + define.group(3)))
        upgraded = helm.Chart.load(str(copy_dir))
        admin = {"admin": {"username": "admin", "email": "admin@example.com"}}
        again = secret_of(upgraded, admin, is_install=False, is_upgrade=True, revision=2)
        if again != kept:
            fail(f"an upgrade rotates {sorted(k for k in kept if again.get(k) != kept[k])}")
        given = deep_merge(admin, {"secrets": {"values": {"jwtSecret": "given-" + "j" * 40}}})
        if secret_of(upgraded, given, is_install=False, is_upgrade=True, revision=2)["JWT_SECRET"] != "given-" + "j" * 40:
            fail("secrets.values.jwtSecret does not win over the value already in the Secret")


def must_fail_render(chart: helm.Chart, values: dict | None, needle: str) -> None:
    try:
        render(chart, values)
    except (helm.HelmRenderError, helm.HelmValuesError) as e:
        if needle not in str(e):
            fail(f"rendering failed, but not with {needle!r}: {e}")
        return
    fail(f"rendering succeeded; expected a failure mentioning {needle!r}")


# --------------------------------------------------------------------------
# docker-compose.yml

def compose_default(value) -> str:
    """A compose value with its ${VAR:-default} interpolations replaced by the
    defaults: what a user who sets nothing gets."""
    return re.sub(r"\$\{[A-Z_][A-Z0-9_]*:-([^}]*)\}", r"\1", str(value))


def check_compose(known: set[str]) -> None:
    path = ROOT / "docker-compose.yml"
    doc = yaml.safe_load(path.read_text())
    svcs = doc.get("services") or {}
    for s in SERVICES + ["postgres", "nats"]:
        if s not in svcs:
            fail(f"docker-compose.yml: no service {s}")
    pg, nats = svcs["postgres"], svcs["nats"]
    if not compose_default(pg.get("image", "")).startswith("postgres:15"):
        fail(f"postgres image {pg.get('image')}, expected postgres:15 by default")
    if not compose_default(nats.get("image", "")).startswith("nats:2.9"):
        fail(f"nats image {nats.get('image')}, expected nats:2.9 by default")
    ncmd = nats.get("command")
    ncmd = shlex.split(ncmd) if isinstance(ncmd, str) else (ncmd or [])
    if "-js" not in ncmd and "--jetstream" not in ncmd:
        fail("nats runs without -js")
    if not nats.get("volumes"):
        fail("nats has no volume for its JetStream store")
    for s in ("postgres", "nats"):
        if not (svcs[s].get("healthcheck") or {}).get("test"):
            fail(f"{s} has no healthcheck")
    volumes = set((doc.get("volumes") or {}).keys())
    for s, svc in svcs.items():
        for v in svc.get("volumes") or []:
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if src and not src.startswith((".", "/")) and src not in volumes:
                fail(f"{s}: volume {src} is not declared")
    for s in SERVICES:
        svc = svcs[s]
        where = f"docker-compose.yml {s}"
        build = svc.get("build") or {}
        if not isinstance(build, dict) or build.get("target") != s:
            fail(f"{where}: build.target is {build.get('target') if isinstance(build, dict) else build!r}, expected {s}")
        if build.get("context", ".") not in (".", "./"):
            fail(f"{where}: build context {build.get('context')}")
        if build.get("dockerfile", "Dockerfile") != "Dockerfile":
            fail(f"{where}: dockerfile {build.get('dockerfile')}")
        if not re.fullmatch(rf"ecommerce/{s}:[^:/]+", str(svc.get("image", ""))):
            fail(f"{where}: image {svc.get('image')!r}, expected ecommerce/{s}:<tag>")
        hc = (svc.get("healthcheck") or {}).get("test")
        if not hc:
            fail(f"{where}: no healthcheck")
        hc_text = " ".join(hc) if isinstance(hc, list) else hc
        if f"127.0.0.1:{PORTS[s]}/" not in hc_text and f"localhost:{PORTS[s]}/" not in hc_text:
            fail(f"{where}: the healthcheck does not probe its own port {PORTS[s]}: {hc_text}")
        if isinstance(hc, list) and hc[0] == "CMD" and not hc[1].startswith("/usr/local/bin/busybox"):
            fail(f"{where}: the healthcheck runs {hc[1]}, but the image has only /usr/local/bin/busybox for probes")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        env = {k: str(v) for k, v in env.items()}
        for name in env:
            if not env_name_known(name, known):
                fail(f"{where}: sets {name}, which no service reads")
        if env.get("APP_ENV") != "development":
            fail(f"{where}: APP_ENV={env.get('APP_ENV')!r}, compose is development only")
        if env.get(LISTEN_VAR[s]) != f":{PORTS[s]}":
            fail(f"{where}: {LISTEN_VAR[s]}={env.get(LISTEN_VAR[s])!r}")
        for callee in CALLS.get(s, ()):
            if env.get(LISTEN_VAR[callee]) != f"{callee}:{PORTS[callee]}":
                fail(f"{where}: {LISTEN_VAR[callee]}={env.get(LISTEN_VAR[callee])!r}, expected {callee}:{PORTS[callee]}")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            fail(f"{where}: depends_on without conditions")
        wanted = set(CALLS.get(s, ())) - ({"producer"} if s == "order" else set())
        if s in DB_SERVICES:
            wanted.add("postgres")
            if env.get("DB_HOST") != "postgres" or not env.get("DB_PASSWORD"):
                fail(f"{where}: DB_HOST/DB_PASSWORD are not the compose postgres")
            if env["DB_PASSWORD"] != (pg.get("environment") or {}).get("POSTGRES_PASSWORD"):
                fail(f"{where}: DB_PASSWORD differs from postgres's POSTGRES_PASSWORD")
        if s in NATS_SERVICES:
            wanted.add("nats")
            if env.get("NATS_ADDR") != "nats://nats:4222":
                fail(f"{where}: NATS_ADDR={env.get('NATS_ADDR')!r}")
        if s == "gateway":
            if len(env.get("JWT_SECRET", "")) < 32:
                fail(f"{where}: JWT_SECRET shorter than 32 bytes")
            ports = [compose_default(p) for p in svc.get("ports") or []]
            if not any(p.split(":")[-2:] == ["8080", "8080"] for p in ports):
                fail(f"{where}: 8080 is not published by default: {ports}")
            if any(not p.startswith("127.0.0.1:") for p in ports):
                fail(f"{where}: publishes beyond loopback (dev-only secrets): {ports}")
        missing = wanted - set(deps)
        if missing:
            fail(f"{where}: depends_on lacks {sorted(missing)}")
        for dep, cond in deps.items():
            if dep not in svcs:
                fail(f"{where}: depends on unknown {dep}")
            if (cond or {}).get("condition") != "service_healthy":
                fail(f"{where}: depends_on {dep} is not service_healthy")
            if not (svcs[dep].get("healthcheck") or {}).get("test"):
                fail(f"{where}: depends on {dep}, which has no healthcheck")
        if s != "gateway" and svc.get("ports"):
            fail(f"{where}: publishes ports; only the gateway is published")
        if svc.get("user") not in (None, f"{UID}:{UID}", str(UID)):
            fail(f"{where}: runs as {svc.get('user')}")
    for s, svc in svcs.items():
        env = svc.get("environment") or {}
        for name in SECRET_VARS | {"POSTGRES_PASSWORD"}:
            val = str((env if isinstance(env, dict) else {}).get(name, ""))
            if val and "dev" not in val.lower():
                fail(f"docker-compose.yml {s}: {name} does not say it is dev-only: {val!r}")


# --------------------------------------------------------------------------
# Dockerfile

def dockerfile_global_args(text: str) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults."""
    args = {}
    for line in text.split("\nFROM ", 1)[0].splitlines():
        m = re.match(r"ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", line.strip())
        if m:
            args[m.group(1)] = m.group(2) or ""
    return args


def dockerfile_stages(text: str) -> dict[str, dict]:
    """Stages by name; a FROM's ${ARG} is replaced by the global ARG's
    default (the image users get)."""
    args = dockerfile_global_args(text)
    text = re.sub(r"\\\n", " ", text)
    stages: dict[str, dict] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            base, name = m.group(1), (m.group(2) or f"#{len(stages)}").lower()
            base = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda a: args.get(a.group(1), a.group(0)), base)
            current = stages[name] = {"base": base.lower(), "lines": [], "from": m.group(1)}
        elif current is not None:
            current["lines"].append((word, rest.strip()))
    return stages


def stage_chain(stages: dict, name: str) -> list[dict]:
    chain = []
    while name in stages and len(chain) < 20:
        chain.append(stages[name])
        name = stages[name]["base"]
    return chain


def inherited(chain: list[dict], word: str) -> list[str]:
    """A word's instructions along a stage chain, base first: the image's own
    setting is the last one (ENTRYPOINT, HEALTHCHECK, CMD) or all (EXPOSE)."""
    return [r for c in reversed(chain) for w, r in c["lines"] if w == word]


def stage_vars(chain: list[dict], words=("ARG", "ENV")) -> dict[str, str]:
    """The values that ARG defaults and ENV set along a stage chain, base
    first: ENV alone for what a container sees at run time."""
    out: dict[str, str] = {}
    for w, r in (l for c in reversed(chain) for l in c["lines"]):
        if w not in words:
            continue
        tokens = shlex.split(r)
        if w == "ENV" and tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
            out[tokens[0]] = " ".join(tokens[1:])
            continue
        for tok in tokens:
            key, eq, value = tok.partition("=")
            if eq:
                out[key] = value
    return out


def expand(text: str, values: dict[str, str]) -> str:
    """$VAR, ${VAR} and ${VAR:?...}-style references replaced by the values
    known; unknown ones (a shell's own $s) stay as they are."""
    def sub(m):
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+?][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, text)


def copy_sources(stages: dict, copy: str, seen: tuple = ()) -> set[str]:
    """The build context's top-level folders and files one COPY brings in:
    its own sources, or all a stage copies when it copies that stage whole
    (`COPY --from=sources / ./`)."""
    parts = copy.split()
    source = next((p.split("=", 1)[1] for p in parts if p.startswith("--from=")), None)
    paths = [p for p in parts if not p.startswith("--")][:-1]
    if source is None:
        return {p.strip("./").split("/")[0] for p in paths} - {""}
    if source in stages and source not in seen and paths == ["/"]:
        return copied_sources(stages, source, seen)
    return set()


def copied_sources(stages: dict, name: str, seen: tuple = ()) -> set[str]:
    """What copy_sources gives for every COPY of a stage chain."""
    return {f for c in stage_chain(stages, name) for w, r in c["lines"] if w == "COPY"
            for f in copy_sources(stages, r, seen + (name,))}


def healthcheck_test(hc: str) -> list[str] | None:
    """The exec-form command of a HEALTHCHECK line, or None for another form."""
    m = re.search(r"(?:^|\s)CMD\s+(\[.*\])\s*$", hc)
    if not m:
        return None
    try:
        cmd = json.loads(m.group(1))
    except ValueError:
        return None
    return cmd if isinstance(cmd, list) and all(isinstance(a, str) for a in cmd) else None


def check_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = dockerfile_stages(text)
    builder = stages.get("builder")
    if builder is None:
        fail("Dockerfile: no builder stage")
    targets = dict(PORTS)
    builders = {"builder": builder}
    if (ROOT / "services/operator/Cargo.toml").exists():
        op_values = ROOT / "charts/ecommerce-operator/values.yaml"
        op = yaml.safe_load(op_values.read_text()) if op_values.exists() else {}
        targets["operator"] = int(((op or {}).get("metrics") or {}).get("port", 8080))
        if "operator-builder" not in stages:
            fail("Dockerfile: services/operator exists but there is no operator-builder stage")
        builders["operator-builder"] = stages["operator-builder"]
    for bname, b in builders.items():
        chain_lines = [l for c in reversed(stage_chain(stages, bname)) for l in c["lines"]]
        builds = [r for w, r in chain_lines if w == "RUN" and "cargo build --release --locked" in r]
        if len(builds) != 2:
            fail(f"Dockerfile {bname}: should run `cargo build --release --locked` twice (dependencies, then sources); found {len(builds)}")
        first_build = next(i for i, (w, r) in enumerate(chain_lines) if w == "RUN" and "cargo build" in r)
        copies_before = [r for w, r in chain_lines[:first_build] if w == "COPY"]
        if any(re.search(r"(^|\s)(\.|crates|services)(\s|$)", c) and "--from" not in c for c in copies_before):
            fail(f"Dockerfile {bname}: the sources are copied before the dependency layer is built")
        if any({"crates", "services"} & copy_sources(stages, c) for c in copies_before):
            fail(f"Dockerfile {bname}: the sources are copied (through a stage) before the dependency layer is built")
        after = {f for w, r in chain_lines[first_build:] if w == "COPY" for f in copy_sources(stages, r)}
        if not {"crates", "services", "proto"} <= after:
            fail(f"Dockerfile {bname}: after the dependency layer it copies {sorted(after)}, not crates, services and proto")
        if "COPY" not in [w for w, _ in chain_lines[first_build:]]:
            fail(f"Dockerfile {bname}: the sources are never copied after the dependency layer")
    pkgs = " ".join(r for w, r in builder["lines"] if w == "ARG" and r.startswith("PACKAGES"))
    for s in SERVICES:
        if f"-p {s}" not in pkgs:
            fail(f"Dockerfile: the builder does not build {s}")
    # The host's release builds take the same package set, so that every
    # dependency gets the same features and symbol names (tools/link-order).
    host = re.search(r"cargo build --release --locked ((?:-p \S+ ?)+)", (ROOT / "scripts/release-build.sh").read_text())
    docker = re.search(r'PACKAGES="([^"]*)"', pkgs)
    if not host or not docker or set(host.group(1).split()) != set(docker.group(1).split()):
        fail("Dockerfile: the builder's PACKAGES differ from scripts/release-build.sh's packages")
    # ...and the toolchain the lists of tools/link-order were made by.
    rust_image = re.search(r"^ARG RUST_IMAGE=rust:(\d+\.\d+\.\d+)-", text, re.M)
    made_by = re.match(r"# rustc (\S+)", (ROOT / "tools/link-order/gateway.txt").read_text())
    if not rust_image or not made_by or rust_image.group(1) != made_by.group(1):
        fail(f"Dockerfile: RUST_IMAGE is not rust:<the rustc of tools/link-order's lists, "
             f"{made_by.group(1) if made_by else 'unknown'}>")
    for s, port in targets.items():
        st = stages.get(s)
        if st is None:
            fail(f"Dockerfile: no target {s}")
        chain = stage_chain(stages, s)
        lines = [l for c in chain for l in c["lines"]]
        users = [r for c in reversed(chain) for w, r in c["lines"] if w == "USER"]
        if not users or users[-1].split(":")[0] != str(UID):
            fail(f"Dockerfile {s}: USER is {users[-1] if users else 'root (none)'}, expected {UID}")
        # What the image ends up with: the last ENTRYPOINT and HEALTHCHECK of
        # its chain (a shared stage may set them), every EXPOSE, with the ARG
        # and ENV values the chain gives them.
        entry = inherited(chain, "ENTRYPOINT")[-1:]
        if entry != [f'["/usr/local/bin/{s}"]']:
            fail(f"Dockerfile {s}: ENTRYPOINT {entry}, expected [\"/usr/local/bin/{s}\"]")
        if inherited(chain, "CMD"):
            fail(f"Dockerfile {s}: a CMD would be passed as arguments")
        build_vars = stage_vars(chain)
        exposes = [expand(r, build_vars) for r in inherited(chain, "EXPOSE")]
        if exposes != [str(port)]:
            fail(f"Dockerfile {s}: EXPOSE {exposes}, expected {port}")
        copies = [r for w, r in st["lines"] if w == "COPY"]
        source = "operator-builder" if s == "operator" else "binaries"
        if not any(r.startswith(f"--from={source} ") and r.endswith(f"/usr/local/bin/{s}") and f"/{s} " in r for r in copies):
            fail(f"Dockerfile {s}: the binary is not copied from {source} to /usr/local/bin/{s}")
        base = chain[-1]["base"]
        if not re.match(r"(gcr\.io/distroless/cc|debian:.*slim)", base):
            fail(f"Dockerfile {s}: runtime base {base} is neither distroless cc nor debian-slim")
        if any(w == "RUN" for w, _ in lines):
            fail(f"Dockerfile {s}: its runtime stages RUN commands (the base has no shell)")
        hc = inherited(chain, "HEALTHCHECK")[-1:]
        if not hc or hc[0].upper() == "NONE":
            fail(f"Dockerfile {s}: no HEALTHCHECK")
        test = healthcheck_test(hc[0])
        if test is None:
            fail(f"Dockerfile {s}: HEALTHCHECK is not exec form CMD [...] (the runtime base has no /bin/sh): {hc[0]}")
        if any("$" in a for a in test):
            # Docker expands no variable in a HEALTHCHECK: a shell must, from
            # the container's environment, so only ENV values count here.
            shell = (test[0].endswith("/sh") and test[1:2] == ["-c"]) or (test[0].endswith("/busybox") and test[1:3] == ["sh", "-c"])
            if not shell:
                fail(f"Dockerfile {s}: HEALTHCHECK {test} has variables but no shell to expand them")
            run_env = stage_vars(chain, ("ENV",))
            test = [expand(a, run_env) for a in test]
            if any(re.search(r"\$\{?[A-Za-z_]", a) for a in test):
                fail(f"Dockerfile {s}: HEALTHCHECK {test} reads a variable that no ENV of the image sets")
        if f"127.0.0.1:{port}/healthz" not in " ".join(test):
            fail(f"Dockerfile {s}: no HEALTHCHECK of /healthz on {port}: {test}")
        if "/usr/local/bin/busybox" in test[0] and not any("/usr/local/bin/busybox" in r for c in chain for w, r in c["lines"] if w == "COPY"):
            fail(f"Dockerfile {s}: HEALTHCHECK uses busybox, which the image lacks")
    check_dockerfile_tools(stages)
    ignore = (ROOT / ".dockerignore").read_text().split()
    for entry in ("target/", ".git", ".run", ".venv"):
        if entry not in ignore and entry.rstrip("/") not in ignore:
            fail(f".dockerignore lacks {entry}")
    check_dockerfile_binaries(stages, ignore)


# Workspace binaries imaged like the services (from `binaries`) that serve
# nothing: no port, no health check (tools/loadgen, the chart's loadgen Job).
TOOLS = ["loadgen"]


def check_dockerfile_tools(stages: dict) -> None:
    for s in TOOLS:
        st = stages.get(s)
        if st is None:
            fail(f"Dockerfile: no target {s}")
        chain = stage_chain(stages, s)
        if chain[1:2] != [stages["runtime"]]:
            fail(f"Dockerfile {s}: not built FROM runtime like the services")
        words = [w for w, _ in st["lines"]]
        if [r for w, r in st["lines"] if w == "ENTRYPOINT"] != [f'["/usr/local/bin/{s}"]']:
            fail(f"Dockerfile {s}: ENTRYPOINT is not [\"/usr/local/bin/{s}\"]")
        if {"EXPOSE", "HEALTHCHECK", "CMD", "RUN", "USER"} & set(words):
            fail(f"Dockerfile {s}: a tool has only its binary and ENTRYPOINT on runtime (found {words})")
        from_base = {w for c in chain[1:] for w, _ in c["lines"]} & {"EXPOSE", "HEALTHCHECK", "CMD", "ENTRYPOINT"}
        if from_base:
            fail(f"Dockerfile {s}: runtime gives it {sorted(from_base)}, which only the services' stages should have")
        if [r for w, r in st["lines"] if w == "COPY"] != [f"--from=binaries /out/{s} /usr/local/bin/{s}"]:
            fail(f"Dockerfile {s}: the binary is not copied from binaries to /usr/local/bin/{s}")


def check_dockerfile_binaries(stages: dict, ignore: list[str]) -> None:
    """`binaries` is the builder by default (what users get) or, with
    BINARIES=prebuilt, the host's target/release binaries; both give
    /out/<service> for every service, and the base images are build
    arguments defaulting to the public ones."""
    text = (ROOT / "Dockerfile").read_text()
    args = dockerfile_global_args(text)
    binaries = stages.get("binaries")
    if binaries is None or binaries["from"] != "${BINARIES}" or args.get("BINARIES") != "builder":
        fail("Dockerfile: no `FROM ${BINARIES} AS binaries` with ARG BINARIES=builder")
    if "prebuilt" not in stages:
        fail("Dockerfile: no prebuilt stage (BINARIES=prebuilt)")
    builder_copies = expand(" ".join(r for w, r in stages["builder"]["lines"] if w == "RUN"),
                            stage_vars(stage_chain(stages, "builder"), ("ARG",)))
    prebuilt_copies = " ".join(r for w, r in stages["prebuilt"]["lines"] if w == "COPY")
    pkgs = " ".join(r for w, r in stages["builder"]["lines"] if w == "ARG" and r.startswith("PACKAGES"))
    compose_test = (ROOT / "scripts/compose-test.sh").read_text()
    for s in TOOLS:
        if f"-p {s}" not in pkgs or not re.search(rf"for s in [^;]*\b{s}\b", builder_copies):
            fail(f"Dockerfile: the builder does not build {s} into /out/{s}")
    # release-build.sh builds the builder's PACKAGES (check_dockerfile), TOOLS among them.
    if "bash scripts/release-build.sh" not in compose_test:
        fail("scripts/compose-test.sh does not build the binaries BINARIES=prebuilt copies (scripts/release-build.sh)")
    for s in SERVICES + TOOLS:
        if f"/out/$s" not in builder_copies and f"/out/{s}" not in builder_copies:
            fail(f"Dockerfile: the builder does not leave /out/{s}")
        if f"target/release/{s} " not in prebuilt_copies + " " or not prebuilt_copies.endswith("/out/"):
            fail(f"Dockerfile: the prebuilt stage does not copy target/release/{s} to /out/")
        if f"!target/release/{s}" not in ignore:
            fail(f".dockerignore does not let target/release/{s} in for BINARIES=prebuilt")
    wanted = {"RUST_IMAGE": "rust:", "RUNTIME_IMAGE": "gcr.io/distroless/cc", "BUSYBOX_IMAGE": "busybox:"}
    for name, prefix in wanted.items():
        if not args.get(name, "").startswith(prefix):
            fail(f"Dockerfile: ARG {name}={args.get(name)!r}, expected the public {prefix}... by default")
    for name, stage in stages.items():
        if stage["from"].startswith("$"):
            continue
        if stage["from"] not in stages and stage["from"] != "scratch":
            fail(f"Dockerfile {name}: FROM {stage['from']} is not a build argument (CI passes local stand-ins)")


def workspace_targets(manifest_dir: Path) -> dict[str, set]:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=manifest_dir, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"cargo metadata in {manifest_dir}: {out.stderr.strip()[-600:]}")
    meta = json.loads(out.stdout)
    root = Path(meta["workspace_root"])
    targets = {}
    for pkg in meta["packages"]:
        targets[pkg["name"]] = {
            (kind, t["name"], os.path.relpath(t["src_path"], root))
            for t in pkg["targets"] for kind in t["kind"] if kind in ("bin", "lib", "custom-build")
        }
    return targets


def check_dockerfile_recipe() -> None:
    """Runs the Dockerfile's planner step on a copy of the build context and
    has cargo load the result: the stubbed workspace must have every package
    and every lib/bin/build-script target of the real one, and the builder
    must copy every workspace member's sources."""
    text = (ROOT / "Dockerfile").read_text()
    stage = re.search(r"FROM \S+ AS planner\n(.*?)\nFROM ", text, re.S)
    if not stage:
        fail("Dockerfile: no planner stage")
    runs = re.findall(r"^RUN (.*?)(?=\n(?:[A-Z]+ |#|$)|\Z)", stage.group(1), re.S | re.M)
    if len(runs) != 1:
        fail(f"Dockerfile: expected one RUN in the planner stage, found {len(runs)}")
    script = runs[0].replace("\\\n", " ")
    ignore = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    with tempfile.TemporaryDirectory(prefix="packaging-") as tmp:
        ctx, recipe = Path(tmp) / "context", Path(tmp) / "recipe"
        shutil.copytree(ROOT, ctx, symlinks=True,
                        ignore=shutil.ignore_patterns(*[i.replace("**/", "") for i in ignore]))
        out = subprocess.run(["sh", "-c", script.replace("/recipe", str(recipe))], cwd=ctx,
                             capture_output=True, text=True)
        if out.returncode != 0:
            fail(f"the planner step fails: {out.stderr.strip()[-600:]}")
        real = workspace_targets(ROOT)
        stub = workspace_targets(recipe)
        if set(real) != set(stub):
            fail(f"the recipe's workspace has packages {sorted(stub)}, the real one {sorted(real)}")
        for pkg, targets in real.items():
            if targets != stub[pkg]:
                fail(f"package {pkg}: the recipe has targets {sorted(stub[pkg] - targets)} / lacks {sorted(targets - stub[pkg])}")
            for kind, name, path in stub[pkg]:
                if not (recipe / path).is_file():
                    fail(f"package {pkg}: the recipe has no stub for {kind} {name} ({path})")
    copied = copied_sources(dockerfile_stages(text), "builder")
    members = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
                             cwd=ROOT, capture_output=True, text=True, check=True)
    meta = json.loads(members.stdout)
    for pkg in meta["packages"]:
        rel = os.path.relpath(Path(pkg["manifest_path"]).parent, meta["workspace_root"])
        if rel.split("/")[0] not in copied:
            fail(f"Dockerfile: the builder does not copy {rel} (workspace member {pkg['name']})")
    if "proto" not in copied:
        fail("Dockerfile: the builder does not copy proto/")


# --------------------------------------------------------------------------
# Tiltfile: executed with stand-ins for Tilt's functions

def check_tiltfile(chart_docs_cache: dict) -> None:
    path = ROOT / "Tiltfile"
    source = path.read_text()
    tree = ast.parse(source, filename="Tiltfile")  # Starlark is a Python subset
    del tree
    calls: dict[str, list] = {"docker_build": [], "k8s_resource": [], "k8s_yaml": [], "helm": []}

    def docker_build(ref, context, **kw):
        calls["docker_build"].append((ref, context, kw))

    def helm_fn(chart, name="", namespace="", values=None, set=None, **kw):  # noqa: A002
        values = [values] if isinstance(values, str) else (values or [])
        merged: dict = {}
        for v in values:
            p = ROOT / v
            if not p.is_file():
                fail(f"Tiltfile: helm values {v} does not exist")
            merged = deep_merge(merged, yaml.safe_load(p.read_text()) or {})
        for s in set or []:
            key, _, val = s.partition("=")
            cur = merged
            parts = key.split(".")
            for k in parts[:-1]:
                cur = cur.setdefault(k, {})
            cur[parts[-1]] = val
        chart_dir = ROOT / chart
        manifests = helm.Chart.load(str(chart_dir)).render(merged, name=name or "tilt", namespace=namespace or "default", is_install=True)
        docs = rendered_docs(manifests)
        calls["helm"].append((chart, docs))
        return docs

    def k8s_yaml(docs, **kw):
        calls["k8s_yaml"].append(docs)

    def k8s_resource(workload="", **kw):
        calls["k8s_resource"].append((workload, kw))

    class _Config:
        def define_string_list(self, *a, **k):
            pass

        def define_string(self, *a, **k):
            pass

        def define_bool(self, *a, **k):
            pass

        def parse(self):
            return {}

    env = {
        "docker_build": docker_build,
        "helm": helm_fn,
        "k8s_yaml": k8s_yaml,
        "k8s_resource": k8s_resource,
        "allow_k8s_contexts": lambda *a, **k: None,
        "update_settings": lambda *a, **k: None,
        "watch_file": lambda *a, **k: None,
        "local_resource": lambda *a, **k: None,
        "port_forward": lambda local, remote=None, **k: (local, remote),
        "link": lambda *a, **k: a,
        "config": _Config(),
        "os": os,
        "fail": lambda msg: fail(f"Tiltfile fail(): {msg}"),
    }
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(source, "Tiltfile", "exec"), env)  # noqa: S102 - our own file, with stand-ins
    finally:
        os.chdir(cwd)
    built = {ref: (ctx, kw) for ref, ctx, kw in calls["docker_build"]}
    for s in SERVICES:
        ref = f"ecommerce/{s}"
        if ref not in built:
            fail(f"Tiltfile: no docker_build of {ref}")
        ctx, kw = built[ref]
        if kw.get("target") != s or ctx not in (".", "./") or kw.get("dockerfile", "Dockerfile") != "Dockerfile":
            fail(f"Tiltfile: docker_build {ref} is not the Dockerfile's target {s}: {ctx} {kw}")
        copied = copied_sources(dockerfile_stages((ROOT / "Dockerfile").read_text()), "builder")
        if kw.get("only") and not copied | {"Cargo.toml", "Cargo.lock"} <= set(kw["only"]):
            fail(f"Tiltfile: docker_build {ref} sends only {kw['only']}, the builder copies {sorted(copied)} and the manifests")
    if not calls["helm"] or not calls["k8s_yaml"]:
        fail("Tiltfile: no k8s_yaml(helm(...))")
    docs = [d for batch in calls["k8s_yaml"] for d in (batch if isinstance(batch, list) else [])]
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    images = {c["image"].rsplit(":", 1)[0] for d in workloads.values() for c in pod_spec(d)["containers"]}
    for s in SERVICES:
        if f"ecommerce/{s}" not in images:
            fail(f"Tiltfile: the chart's values render no image ecommerce/{s}, so Tilt would not inject its build")
    resources = {}
    for workload, kw in calls["k8s_resource"]:
        if workload not in workloads:
            fail(f"Tiltfile: k8s_resource {workload!r} is not a rendered workload ({sorted(workloads)})")
        resources[kw.get("new_name") or workload] = (workload, kw)
    for name, (_, kw) in resources.items():
        for dep in kw.get("resource_deps") or []:
            if dep not in resources:
                fail(f"Tiltfile: {name} depends on unknown resource {dep}")
    for s in SERVICES:
        if not any(workloads[w]["metadata"]["labels"].get("app.kubernetes.io/component") == s for w, _ in resources.values()):
            fail(f"Tiltfile: no k8s_resource for {s}")
    gateway = [kw for w, kw in resources.values() if workloads[w]["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"]
    if not gateway or not gateway[0].get("port_forwards"):
        fail("Tiltfile: the gateway has no port-forward")
    chart_docs_cache["tilt"] = docs


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------
# monitoring: the chart's PrometheusRule and PodMonitor, k8s/monitoring/

RULES_FILE = "k8s/monitoring/prometheus-rules.yaml"
RULES_TEMPLATE = "ecommerce/templates/prometheusrule.yaml"
# The plain file's own metadata; everything else is the chart's rendering.
RULES_METADATA = {"name": "ecommerce-alerts", "labels": {"app.kubernetes.io/part-of": "ecommerce"}}
MONITORING_ON = {"assumeCRDs": True, "prometheusRule": {"enabled": True}, "podMonitor": {"enabled": True}}
SEVERITIES = {"critical", "warning", "info"}

# The Prometheus Operator's kinds are not in k8s/ (the operator installs its
# CRDs): the monitoring.coreos.com/v1 fields the chart uses, written out as
# strict structural schemas. A subset of the real CRDs: a field outside it
# fails here, which errs on the safe side.
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {"type": "object", "properties": {
    "matchLabels": _STRING_MAP,
    "matchExpressions": {"type": "array", "items": {"type": "object", "required": ["key", "operator"], "properties": {
        "key": {"type": "string"}, "operator": {"type": "string"}, "values": {"type": "array", "items": {"type": "string"}}}}}}}
PROMETHEUS_OPERATOR_SCHEMAS = {
    ("monitoring.coreos.com", "v1", "PrometheusRule"): {"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "properties": {"groups": {"type": "array", "items": {
            "type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "minLength": 1},
                "interval": _DURATION,
                "labels": _STRING_MAP,
                "rules": {"type": "array", "items": {"type": "object", "required": ["expr"], "properties": {
                    "alert": {"type": "string"},
                    "record": {"type": "string"},
                    "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "for": _DURATION,
                    "keep_firing_for": _DURATION,
                    "labels": _STRING_MAP,
                    "annotations": _STRING_MAP}}}}}}}}}},
    ("monitoring.coreos.com", "v1", "PodMonitor"): {"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["podMetricsEndpoints"], "properties": {
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": {"type": "object", "properties": {
                "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
            "jobLabel": {"type": "string"},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "podMetricsEndpoints": {"type": "array", "items": {"type": "object", "properties": {
                "port": {"type": "string"},
                "path": {"type": "string"},
                "scheme": {"enum": ["http", "https"]},
                "interval": _DURATION,
                "scrapeTimeout": _DURATION,
                "honorLabels": {"type": "boolean"}}}}}}}},
}


def metric_sources() -> list[str]:
    return sorted(glob.glob(str(ROOT / "crates/**/*.rs"), recursive=True)
                  + glob.glob(str(ROOT / "services/**/src/**/*.rs"), recursive=True))


def exported_metrics() -> dict[str, str]:
    """Every series name the services expose -> the metric it belongs to,
    from their `metrics::register("<name>", "<help>", <metric>)` calls and
    `service_metrics!` declarations: the
    registry's `ecommerce_` prefix, counters with `_total`, histograms with
    `_bucket`, `_sum` and `_count`."""
    call = re.compile(r'metrics::register\(\s*"([a-z_][a-z0-9_]*)",\s*"(?:[^"\\]|\\.)*",\s*([A-Za-z_][\w.]*?)(?:\.clone\(\))?\s*,?\s*\)')
    series: dict[str, str] = {}

    def add(kind: str, name: str) -> None:
        full = f"ecommerce_{name}"
        for suffix in {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_sum", "_count"]}[kind]:
            series[full + suffix] = f"{kind.lower()} {full}"

    for path in metric_sources():
        text = Path(path).read_text()
        for name, arg in call.findall(text):
            ident = arg.rsplit(".", 1)[-1]
            kinds = set()
            # `processed: Family<Labels, Counter>` or `let requests = Family::<.., Counter>::default()`
            for decl in re.findall(rf"\b{ident}\s*(?::|=)\s*([^;\n]+)", text):
                kinds = set(re.findall(r"\b(Counter|Gauge|Histogram)\b", decl))
                if kinds:
                    break
            if not kinds:  # `let family = Family::default()`: the file's one metric type
                kinds = {k.capitalize() for k in re.findall(r"metrics::(counter|gauge|histogram)::", text)}
            if len(kinds) != 1:
                fail(f"{os.path.relpath(path, ROOT)}: cannot tell the type of metric {name} ({arg}): {sorted(kinds) or 'none found'}")
            add(kinds.pop(), name)
    # `platform::service_metrics! { field: Family<Labels, Counter> = ("<name>", "<help>"), }`
    declared = re.compile(r'\b([a-z_][a-z0-9_]*):\s*([^=\n]+?)\s*=\s*\(\s*"([a-z_][a-z0-9_]*)",\s*"(?:[^"\\]|\\.)*",?\s*\)')
    for path in metric_sources():
        text = Path(path).read_text()
        if "service_metrics!" not in text:
            continue
        for _field, kind_decl, name in declared.findall(text):
            kinds = set(re.findall(r"\b(Counter|Gauge|Histogram)\b", kind_decl))
            if len(kinds) != 1:
                fail(f"{os.path.relpath(path, ROOT)}: cannot tell the type of metric {name} ({kind_decl})")
            add(kinds.pop(), name)
    if not series:
        fail("no metrics::register(...) call found in crates/ and services/")
    return series


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "and", "or", "unless", "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are not
    functions, keywords, label names or values, durations or numbers."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)                                    # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                                   # ranges
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # 1e3, 0.5
        names.add(word)
    return names


def check_prometheus_rule(doc: dict, series: dict[str, str], origin: str) -> None:
    """Every rule: an alert with expr, for, a severity label and summary and
    description annotations; every metric it reads is one the services
    export, and every exact label value it matches is one their sources set."""
    sources = "\n".join(Path(p).read_text() for p in metric_sources())
    groups = (doc.get("spec") or {}).get("groups") or []
    if not groups:
        fail(f"{origin}: no rule groups")
    alerts = set()
    for g in groups:
        if not g.get("name") or not g.get("rules"):
            fail(f"{origin}: group {g.get('name')!r} without a name or rules")
        for rule in g["rules"]:
            where = f"{origin}: {g['name']}/{rule.get('alert') or rule.get('record')}"
            missing = [k for k in ("alert", "expr", "for", "labels", "annotations") if not rule.get(k)]
            if missing:
                fail(f"{where}: no {', '.join(missing)}")
            if rule["alert"] in alerts:
                fail(f"{where}: the alert is defined twice")
            alerts.add(rule["alert"])
            if rule["labels"].get("severity") not in SEVERITIES:
                fail(f"{where}: severity {rule['labels'].get('severity')!r} is not one of {sorted(SEVERITIES)}")
            for a in ("summary", "description"):
                if not str(rule["annotations"].get(a) or "").strip():
                    fail(f"{where}: no {a} annotation")
            check_promql(str(rule["expr"]), series, sources, where)


def check_promql(expr: str, series: dict[str, str], sources: str, where: str, also: frozenset = frozenset()) -> set[str]:
    """The expression reads metrics the services export (or `also`), and
    every exact label value it matches is one their sources set (a Grafana
    variable, `$name`, stands for any). Returns the metrics it reads."""
    metrics = promql_metric_names(expr)
    if not metrics:
        fail(f"{where}: the expression reads no metric: {expr}")
    unknown = sorted(metrics - set(series) - also)
    if unknown:
        near = {u: difflib.get_close_matches(u, series, n=2) for u in unknown}
        fail(f"{where}: {unknown} are not exported by the services (closest registered: {near})")
    for label, value in re.findall(r'([a-z_]+)\s*=\s*"([^"]*)"', expr):
        if not value.startswith("$") and f'"{value}"' not in sources:
            fail(f"{where}: {label}=\"{value}\" is a label value no service sets")
    return metrics


DASHBOARD_FILE = "charts/ecommerce/dashboards/order-flow.json"
# The kubelet's cAdvisor series (kube-prometheus-stack scrapes them): a
# process cannot export its own container's usage against its limits.
KUBELET_METRICS = frozenset({"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"})
# What the dashboard must show, by the metric it is read from.
DASHBOARD_COVERS = {
    "orders by outcome": "ecommerce_consumer_events_processed_total",
    "latency": "ecommerce_gateway_http_request_duration_seconds_bucket",
    "outbox backlog": "ecommerce_order_outbox_backlog",
    "consumer lag": "ecommerce_consumer_pending",
    "dead letters": "ecommerce_consumer_dead_lettered_total",
    "CPU per service": "container_cpu_usage_seconds_total",
    "memory per service": "container_memory_working_set_bytes",
}


def check_dashboard(chart: helm.Chart) -> None:
    """Off by default; on, one ConfigMap labelled grafana_dashboard: "1"
    holding dashboards/order-flow.json, whose every query is scoped to the
    $namespace variable, reads registered metrics (or the kubelet's CPU and
    memory) and label values the services set, and which covers the order
    flow."""
    if any(d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})
           for d in rendered_docs(render(chart, None))):
        fail("the dashboard ConfigMap is rendered by default")
    docs = rendered_docs(render(chart, {"monitoring": {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Shop"}}}}))
    maps = [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})]
    if len(maps) != 1 or maps[0]["metadata"]["labels"]["grafana_dashboard"] != "1":
        fail(f"expected one ConfigMap labelled grafana_dashboard: \"1\", got {[m['metadata'] for m in maps]}")
    if maps[0]["metadata"].get("annotations") != {"grafana_folder": "Shop"}:
        fail("monitoring.grafanaDashboard.annotations are not on the ConfigMap")
    (name, text), = maps[0]["data"].items()
    dash = json.loads(text)
    if not name.endswith(".json") or dash != json.loads((ROOT / DASHBOARD_FILE).read_text()):
        fail(f"the ConfigMap's {name} is not {DASHBOARD_FILE}")
    variables = {v["name"] for v in dash["templating"]["list"]}
    if not {"datasource", "namespace"} <= variables or not dash.get("uid"):
        fail(f"the dashboard lacks a uid or the datasource/namespace variables: {sorted(variables)}")
    series, sources, read = exported_metrics(), "\n".join(Path(p).read_text() for p in metric_sources()), set()
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    for p in panels:
        where = f"{DASHBOARD_FILE}: panel {p['title']!r}"
        if p.get("datasource", {}).get("uid") != "${datasource}" or not p.get("targets"):
            fail(f"{where}: no targets, or not on the ${{datasource}} variable")
        for target in p["targets"]:
            if 'namespace="$namespace"' not in target["expr"]:
                fail(f"{where}: {target['expr']} is not scoped to namespace=\"$namespace\"")
            read |= check_promql(target["expr"], series, sources, where, KUBELET_METRICS)
    missing = [topic for topic, metric in DASHBOARD_COVERS.items() if metric not in read]
    if missing:
        fail(f"the dashboard does not show {missing}")


def render_for_cluster(chart: helm.Chart, values: dict | None, api_versions: list[str]) -> list[dict]:
    """`helm template --api-versions ...`: a render for a cluster that serves
    these kinds (.Capabilities.APIVersions). helm-python-sdk 0.2.2's
    Chart.render does not take them; its native render does."""
    from helm_python import _native
    opts = {"name": "ci", "namespace": "ci", "is_install": True, "api_versions": api_versions}
    out = _native.call_string("helm_render", chart._raw(), json.dumps(copy.deepcopy(values)), json.dumps(opts))
    return rendered_docs(json.loads(out))


def monitoring_rendering(chart: helm.Chart, values: dict | None) -> list[dict]:
    vals = copy.deepcopy(values or {})
    vals["monitoring"] = deep_merge(vals.get("monitoring") or {}, MONITORING_ON)
    return rendered_docs(render(chart, vals))


def plain_rules(rendered_rule: dict) -> dict:
    return {"apiVersion": rendered_rule["apiVersion"], "kind": rendered_rule["kind"],
            "metadata": copy.deepcopy(RULES_METADATA), "spec": rendered_rule["spec"]}


RULES_HEADER = """\
# The ecommerce stack's alerts as a plain PrometheusRule, for clusters that
# run the Prometheus Operator without installing the Helm chart:
#   kubectl apply -n <the stack's namespace> -f k8s/monitoring/prometheus-rules.yaml
# GENERATED from charts/ecommerce/templates/prometheusrule.yaml (the alerts
# are documented in charts/ecommerce/README.md). Do not edit: change the
# template, then run `bash scripts/check-packaging.sh --write-monitoring`;
# `make packaging-test` fails while the two differ.
"""


def write_monitoring() -> int:
    helm.disable_logging()
    chart = helm.Chart.load(str(ROOT / "charts/ecommerce"))
    values = yaml.safe_load((ROOT / "charts/ecommerce/ci/defaults-values.yaml").read_text())
    rule = next(d for d in monitoring_rendering(chart, values) if d["kind"] == "PrometheusRule")
    out = ROOT / RULES_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(RULES_HEADER + yaml.safe_dump(plain_rules(rule), sort_keys=False, width=1000))
    print(f"wrote {RULES_FILE}")
    return 0


def check_monitoring(chart: helm.Chart, ci: dict, crds: "CrdIndex") -> None:
    """Rendered with the monitoring objects on: they validate, the
    PrometheusRule is well formed and reads real metrics, the PodMonitor
    scrapes the metrics port of every service and nothing else, and
    k8s/monitoring/prometheus-rules.yaml is that rendering."""
    defaults = ci.get("defaults-values") or {}
    off = {k: d for k, d in ((d["kind"], d) for d in rendered_docs(render(chart, defaults)))
           if k in ("PrometheusRule", "PodMonitor")}
    if off:
        fail(f"monitoring objects rendered without being enabled: {sorted(off)}")
    guarded = copy.deepcopy(defaults)
    guarded["monitoring"] = {"prometheusRule": {"enabled": True}, "podMonitor": {"enabled": True}}
    unguarded = [d["kind"] for d in rendered_docs(render(chart, guarded)) if d["kind"] in ("PrometheusRule", "PodMonitor")]
    if unguarded:
        fail(f"{unguarded} rendered for a cluster that does not serve monitoring.coreos.com/v1 (no capability, no assumeCRDs)")
    for kind in ("PrometheusRule", "PodMonitor"):
        # as the API server lists them: the group version and each kind it serves
        served = [d["kind"] for d in render_for_cluster(chart, guarded, ["monitoring.coreos.com/v1", f"monitoring.coreos.com/v1/{kind}"])
                  if d["kind"] in ("PrometheusRule", "PodMonitor")]
        if served != [kind]:
            fail(f"a cluster serving only monitoring.coreos.com/v1/{kind} gets {served}, expected [{kind!r}]")
    docs = monitoring_rendering(chart, defaults)
    for d in docs:
        validate_object(d, "monitoring on", crds)
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    if len(rules) != 1 or len(monitors) != 1:
        fail(f"expected one PrometheusRule and one PodMonitor, got {len(rules)} and {len(monitors)}")
    check_prometheus_rule(rules[0], exported_metrics(), "PrometheusRule")
    monitor = monitors[0]
    scraped = set()
    for d in docs:
        if d["kind"] not in LONG_RUNNING:
            continue
        if not selector_matches(monitor["spec"]["selector"], pod_labels(d)):
            continue
        component = pod_labels(d).get("app.kubernetes.io/component")
        ports = {p.get("name") for c in pod_spec(d)["containers"] for p in c.get("ports") or []}
        for ep in monitor["spec"]["podMetricsEndpoints"]:
            if ep.get("port") not in ports:
                fail(f"PodMonitor: {d['kind']}/{d['metadata']['name']} has no container port {ep.get('port')!r}")
            if ep.get("path") != "/metrics":
                fail(f"PodMonitor: scrapes {ep.get('path')!r}, not /metrics")
        scraped.add(component)
    if scraped != set(SERVICES):
        fail(f"PodMonitor selects {sorted(scraped)}, expected exactly {sorted(SERVICES)}")
    want = plain_rules(rules[0])
    path = ROOT / RULES_FILE
    if not path.is_file():
        fail(f"{RULES_FILE} is missing: run `bash scripts/check-packaging.sh --write-monitoring`")
    have = yaml.safe_load(path.read_text())
    if have != want:
        fail(f"{RULES_FILE} differs from the chart's rendering: run `bash scripts/check-packaging.sh --write-monitoring`")


# --------------------------------------------------------------------------
# the documentation's links

MD_SKIP_DIRS = {".git", ".venv", "target", "node_modules", ".run"}
MD_FENCE = re.compile(r"^\s*(```|~~~)")
MD_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
MD_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MD_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
MD_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in MD_SKIP_DIRS)
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".md")]
    return files


def markdown_prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, code spans blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if MD_FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else MD_CODE_SPAN.sub("``", line))
    return lines


def markdown_anchors(text: str) -> set[str]:
    """The fragment ids GitHub gives a file's headings (lowercased, punctuation
    dropped, spaces to hyphens, repeats numbered -1, -2, ...)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if MD_FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else MD_HEADING.match(line)
        if not m:
            continue
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(2))
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def check_markdown_links() -> int:
    """Every relative link and image of every Markdown file names a file or
    folder that exists, and a `#fragment` a heading of the Markdown file it
    points at. Links to other sites are not followed (no network here)."""
    problems, count = [], 0
    anchors: dict[Path, set[str]] = {}

    def anchors_of(path: Path) -> set[str]:
        if path not in anchors:
            anchors[path] = markdown_anchors(path.read_text())
        return anchors[path]

    files = markdown_files()
    for md in files:
        rel = md.relative_to(ROOT)
        for lineno, line in enumerate(markdown_prose(md.read_text()), 1):
            targets = MD_INLINE_LINK.findall(line)
            ref = MD_REFERENCE.match(line)
            if ref:
                targets.append(ref.group(1))
            for target in targets:
                if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                    continue  # https:, mailto: ...
                count += 1
                path_part, _, fragment = target.partition("#")
                dest = md if not path_part else (
                    ROOT / path_part.lstrip("/") if path_part.startswith("/") else md.parent / path_part)
                dest = Path(os.path.normpath(dest))
                if not dest.exists():
                    problems.append(f"{rel}:{lineno}: {target}: no such file")
                elif ROOT not in dest.parents and dest != ROOT:
                    problems.append(f"{rel}:{lineno}: {target}: outside the repository")
                elif fragment and dest.suffix == ".md" and fragment not in anchors_of(dest):
                    problems.append(f"{rel}:{lineno}: {target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    if problems:
        fail(f"{len(problems)} broken: " + "; ".join(problems))
    if count == 0:
        fail("no relative link found: the scan is broken")
    return count


# --------------------------------------------------------------------------
# k8s/stack/: plain manifests generated from the chart (scripts/render-k8s-stack.py)

STACK_DIR = "k8s/stack"


def stack_renderer():
    import importlib.util
    spec = importlib.util.spec_from_file_location("render_k8s_stack", ROOT / "scripts/render-k8s-stack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def json_pointer_apply(doc: dict, op: dict, where: str) -> None:
    """One RFC 6902 add/remove/replace, as kustomize applies it."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    cur = doc
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    last = parts[-1]
    key = int(last) if isinstance(cur, list) else last
    if op["op"] == "add":
        if isinstance(cur, list):
            cur.insert(key, op["value"])
        else:
            cur[key] = op["value"]
    elif op["op"] in ("replace", "remove"):
        if isinstance(cur, dict) and key not in cur or isinstance(cur, list) and key >= len(cur):
            fail(f"{where}: {op['op']} {op['path']}: no such field")
        if op["op"] == "replace":
            cur[key] = op["value"]
        else:
            del cur[key]
    else:
        fail(f"{where}: op {op['op']} is not one this check applies")


def kustomize_build(directory: Path) -> list[dict]:
    """What `kubectl kustomize` makes of the few fields k8s/stack uses
    (resources, secretGenerator, JSON patches by kind and name); any other
    field fails, so this never silently builds something else."""
    import base64
    rel = os.path.relpath(directory, ROOT)
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - {"apiVersion", "kind", "resources", "secretGenerator", "patches"}
    if unknown or k.get("kind") != "Kustomization":
        fail(f"{rel}/kustomization.yaml: fields {sorted(unknown)} (or kind {k.get('kind')}) that this check does not build")
    docs: list[dict] = []
    for res in k.get("resources") or []:
        path = (directory / res).resolve()
        if path.is_dir():
            docs += kustomize_build(path)
        elif path.is_file():
            docs += load_docs(path.read_text(), os.path.relpath(path, ROOT))
        else:
            fail(f"{rel}/kustomization.yaml: resource {res} does not exist")
    for gen in k.get("secretGenerator") or []:
        if (gen.get("options") or {}).get("disableNameSuffixHash") is not True:
            fail(f"{rel}: secretGenerator {gen['name']} gets a name suffix the base's references do not have")
        literals = dict(l.split("=", 1) for l in gen["literals"])
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]}, "type": "Opaque",
                     "data": {n: base64.b64encode(v.encode()).decode() for n, v in literals.items()}})
    for patch in k.get("patches") or []:
        target = patch["target"]
        hits = [d for d in docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        if len(hits) != 1:
            fail(f"{rel}: a patch targets {target}, which matches {len(hits)} objects")
        for op in yaml.safe_load(patch["patch"]):
            json_pointer_apply(hits[0], op, f"{rel} patch of {target['kind']}/{target['name']}")
    return docs


def keyed(docs: list[dict]) -> dict:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def check_k8s_stack(chart: helm.Chart, known: set[str], crds: "CrdIndex") -> None:
    """k8s/stack/ is exactly what scripts/render-k8s-stack.py writes; its base
    builds to the chart's production rendering and overlays/dev to its
    development one (without Helm's labels and hooks, the Secret from the
    generator), each object valid and held to the chart's conventions; and
    `kubectl kustomize` (when on PATH) builds the same."""
    mod = stack_renderer()
    files = mod.render()
    on_disk = {os.path.relpath(p, ROOT) for p in (ROOT / STACK_DIR).rglob("*") if p.is_file()} if (ROOT / STACK_DIR).is_dir() else set()
    stale = sorted(set(files) ^ on_disk) + sorted(f for f in set(files) & on_disk if (ROOT / f).read_text() != files[f])
    if stale:
        fail(f"{stale} differ from a fresh render: run `.venv/bin/python scripts/render-k8s-stack.py`")
    for name, profile in (("base", mod.BASE), ("overlays/dev", mod.DEV)):
        built = kustomize_build(ROOT / STACK_DIR / name)
        values = chart.merge_values(mod.values(profile))
        want = keyed(mod.rendering(chart, profile).values())
        got = keyed(built)
        generated = {k: v for k, v in got.items() if k[0] == "Secret"}
        for key in generated:
            del got[key]
        if got != want:
            differ = sorted(set(got) ^ set(want)) + sorted(k for k in set(got) & set(want) if got[k] != want[k])
            fail(f"{STACK_DIR}/{name} does not build to the chart's rendering: {differ[:5]}")
        for d in built:
            validate_object(d, f"{STACK_DIR}/{name}", crds)
        check_workload_invariants(built, f"{STACK_DIR}/{name}")
        check_stack_chart(list(got.values()), values, known, f"{STACK_DIR}/{name}")
        refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for d in built if d["kind"] in LONG_RUNNING for c in pod_spec(d)["containers"]
                for e in c.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})}
        if name == "overlays/dev":
            have = {(k[1], key) for k, s in generated.items() for key in s["data"]}
            if refs - have:
                fail(f"{STACK_DIR}/{name}: the generated Secret lacks {sorted(refs - have)}")
            for (secret, key) in refs:
                if key in ("JWT_SECRET", "INTERNAL_AUTH_TOKEN") and len(mod.DEV_SECRETS[key]) < 32:
                    fail(f"{STACK_DIR}/{name}: {key} is shorter than 32")
        elif generated:
            fail(f"{STACK_DIR}/{name} carries a Secret")
        if shutil.which("kubectl"):
            out = subprocess.run(["kubectl", "kustomize", str(ROOT / STACK_DIR / name)], capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                fail(f"kubectl kustomize {STACK_DIR}/{name}: {out.stderr.strip()[-400:]}")
            if keyed(d for d in yaml.safe_load_all(out.stdout) if d) != keyed(built):
                fail(f"kubectl kustomize {STACK_DIR}/{name} builds something else than this check's reading of it")


# --------------------------------------------------------------------------

def charts() -> list[Path]:
    return sorted(Path(p).parent for p in glob.glob(str(ROOT / "charts/*/Chart.yaml")))


def main() -> int:
    started = time.monotonic()
    helm.disable_logging()
    r = Runner()
    known = r.check("service settings found in sources and READMEs", known_env_names) or set()
    if known and not {"DB_PASSWORD", "JWT_SECRET", "INVENTORY_ADDR", "NATS_ADDR"} <= known:
        r.check("service settings include the basics", fail, "the settings scan found too little")
    r.check(f"markdown links resolve ({len(markdown_files())} files: every relative link and #heading)", check_markdown_links)

    crds = CrdIndex()
    crds.schemas.update(PROMETHEUS_OPERATOR_SCHEMAS)
    cli_docs: list[dict] = []
    # CRDs first: k8s/ and every chart's crds/ folder.
    # kustomization.yaml is kustomize's, not an object: check_k8s_stack builds it.
    # ...and the operator's golden renders: every object it applies, strictly valid.
    k8s_files = sorted(f for f in glob.glob(str(ROOT / "k8s/**/*.yaml"), recursive=True) + glob.glob(str(ROOT / "k8s/**/*.yml"), recursive=True)
                       + glob.glob(str(ROOT / "services/operator/tests/golden/*.yaml"))
                       if Path(f).name != "kustomization.yaml")
    crd_files = k8s_files + sorted(glob.glob(str(ROOT / "charts/*/crds/**/*.yaml"), recursive=True))
    k8s_docs: dict[str, list[dict]] = {}

    def load_crds():
        for f in crd_files:
            docs = load_docs(Path(f).read_text(), os.path.relpath(f, ROOT))
            k8s_docs[f] = docs
            for d in docs:
                if d["kind"] == "CustomResourceDefinition":
                    validate_object(d, os.path.relpath(f, ROOT), crds)
                    crds.add(d)
    if crd_files:
        r.check(f"CRDs parse and validate ({len(crd_files)} files under k8s/ and charts/*/crds/)", load_crds)
    for f in k8s_files:
        rel = os.path.relpath(f, ROOT)

        def validate_file(f=f, rel=rel):
            for d in k8s_docs.get(f) or load_docs(Path(f).read_text(), rel):
                validate_object(d, rel, crds)
        r.check(f"{rel} validates (Kubernetes {KUBE_VERSION} strict / CRD schema)", validate_file)

    for chart_dir in charts():
        cname = chart_dir.name
        chart = r.check(f"chart {cname} loads", helm.Chart.load, str(chart_dir))
        if chart is None:
            continue
        value_files = sorted(glob.glob(str(chart_dir / "ci/*.yaml")))
        if not value_files and cname != "ecommerce":
            value_files = [None]
        if cname == "ecommerce" and len(value_files) < 4:
            r.check(f"chart {cname} has ci/ values files", fail, f"only {value_files}")
        for vf in value_files:
            label = f"{cname} with {os.path.relpath(vf, chart_dir) if vf else 'its defaults'}"
            values = yaml.safe_load(Path(vf).read_text()) if vf else None

            def lint(values=values):
                report = helm.lint(str(chart_dir), copy.deepcopy(values), strict=True, namespace="ci", kube_version=f"v{KUBE_VERSION}")
                problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
                if problems:
                    fail(f"helm lint --strict: {problems}")
            r.check(f"helm lint --strict: {label}", lint)

            def render_and_validate(values=values):
                docs = rendered_docs(render(chart, values))
                if not docs:
                    fail("renders nothing")
                for d in docs:
                    validate_object(d, label, crds)
                    if crds.lookup(d) is None:
                        cli_docs.append(d)
                check_workload_invariants(docs, label)
                return docs
            docs = r.check(f"render + validate + workload invariants: {label}", render_and_validate)
            if docs and cname == "ecommerce":
                merged = chart.merge_values(copy.deepcopy(values))
                r.check(f"stack conventions (ports, probes, env names, secrets, NetworkPolicies, PDB, spread, preStop): {label}",
                        check_stack_chart, docs, merged, known, label)
            if vf:
                r.check(f"upgrade render: {label}", lambda values=values: rendered_docs(render(chart, values, is_install=False, is_upgrade=True, revision=2)))
        if cname == "ecommerce":
            ci = {Path(v).stem: yaml.safe_load(Path(v).read_text()) for v in value_files}
            prod = ci.get("production-values") or {}
            no_secret = copy.deepcopy(prod)
            no_secret.setdefault("secrets", {})["existingSecret"] = ""
            r.check("production values without secrets.existingSecret fail to render",
                    must_fail_render, chart, no_secret, "secrets.existingSecret")
            r.check("appEnv=production alone fails to render (no secret)",
                    must_fail_render, chart, {"appEnv": "production"}, "secrets.existingSecret")
            with_values = copy.deepcopy(prod)
            with_values["secrets"]["values"] = {"jwtSecret": "y" * 40}
            r.check("production refuses secrets.values (secrets in values)",
                    must_fail_render, chart, with_values, "development only")
            r.check("the chart's defaults are the development profile: APP_ENV=development, in-cluster PostgreSQL and NATS, "
                    "a generated Secret, no migration hooks, NOTES.txt says so",
                    check_default_profile, chart)
            r.check("the generated Secret: random at install, every value read back on upgrade (lookup stood in for), given values win",
                    check_generated_secret, chart_dir)
            short = copy.deepcopy(ci.get("dev-values") or {})
            short.setdefault("secrets", {}).setdefault("values", {})["jwtSecret"] = "too-short"
            r.check("development refuses a JWT secret under 32 bytes", must_fail_render, chart, short, "32 bytes")
            r.check("development with externalDatabase.host and no existingSecret needs that database's password",
                    must_fail_render, chart, {"externalDatabase": {"host": "db.example"}}, "secrets.values.dbPassword")
            no_db = copy.deepcopy(ci.get("minimal-production-values") or {})
            no_db.pop("externalDatabase", None)
            r.check("production without a database fails to render", must_fail_render, chart, no_db, "externalDatabase.host")
            typo = copy.deepcopy(ci.get("defaults-values") or {})
            typo["replicas"] = 3
            r.check("values.schema.json rejects unknown keys", must_fail_render, chart, typo, "replicas")
            bad_env = copy.deepcopy(ci.get("defaults-values") or {})
            bad_env["appEnv"] = "staging"
            r.check("values.schema.json rejects an unknown appEnv", must_fail_render, chart, bad_env, "appEnv")

            def long_names():
                vals = copy.deepcopy(ci.get("all-features-values") or {})
                vals["fullnameOverride"] = "x" * 63
                docs = rendered_docs(render(chart, vals))
                check_workload_invariants(docs, "a 63-character fullname")
                for d in docs:
                    validate_object(d, "a 63-character fullname", crds)
            r.check("a 63-character release name still gives distinct valid names", long_names)

            def notes():
                text = render(chart, ci.get("defaults-values"))["ecommerce/templates/NOTES.txt"]
                for s in SERVICES:
                    if f"{s}:{PORTS[s]}" not in text.replace("ci-ecommerce-", ""):
                        fail(f"NOTES.txt does not list {s}")
            r.check("NOTES.txt renders and lists every service", notes)
            r.check("Grafana dashboard: off by default; a grafana_dashboard ConfigMap of dashboards/order-flow.json whose queries read "
                    "registered metrics (or the kubelet's CPU/memory) per namespace and cover orders, latency, outbox, lag, dead letters, CPU, memory",
                    check_dashboard, chart)
            r.check("loadgen Job: off by default; runs the loadgen image against the gateway's Service with flags its clap Args declare, "
                    "as the admin, named by its settings, refused without an admin, admitted by the gateway's NetworkPolicy",
                    check_loadgen, chart, ci)
            r.check("helm test: Pods reading the gateway's /readyz and GET /products, deleted when they pass, admitted by its NetworkPolicy",
                    check_helm_tests, chart, ci)
            r.check("monitoring: off by default and without monitoring.coreos.com/v1, each kind on when the cluster serves it; the PrometheusRule's alerts read "
                    f"metrics the services export, the PodMonitor scrapes every service's metrics port, {RULES_FILE} is its rendering",
                    check_monitoring, chart, ci, crds)

        if cname == "ecommerce":
            def readme_values():
                import importlib.util
                spec = importlib.util.spec_from_file_location("render_chart_readme", ROOT / "scripts/render-chart-readme.py")
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
                readme = (chart_dir / "README.md").read_text()
                if mod.readme_with_table(readme) != readme:
                    fail("charts/ecommerce/README.md's values table differs from values.yaml: run `.venv/bin/python scripts/render-chart-readme.py`")
                documented = {row[0] for row in mod.rows((chart_dir / "values.yaml").read_text())}
                leaves = set()

                def walk(v, path):
                    if isinstance(v, dict) and v:
                        for k, x in v.items():
                            walk(x, path + [k])
                    else:
                        leaves.add(".".join(path))
                walk(chart.values, [])
                missing = sorted(l for l in leaves if l not in documented and not any(l.startswith(d + ".") for d in documented))
                if missing:
                    fail(f"values the README's table leaves out: {missing[:8]}")
            r.check("charts/ecommerce/README.md: its values table is scripts/render-chart-readme.py's from values.yaml, with every value",
                    readme_values)
            r.check(f"{STACK_DIR}: equals a fresh scripts/render-k8s-stack.py; base and overlays/dev build (kustomize's way, and with "
                    "kubectl kustomize when on PATH) to the chart's production and development renderings, valid and conventional",
                    check_k8s_stack, chart, known, crds)
            def network_policies_by_default():
                merged = chart.merge_values(None)
                for key in ("networkPolicy", "podDisruptionBudget", "topologySpread"):
                    if merged[key]["enabled"] is not True:
                        fail(f"{key}.enabled is not true by default")
            r.check("ecommerce: NetworkPolicies, PodDisruptionBudgets and topology spread are on by default", network_policies_by_default)
            r.check("one shape: the chart and the operator render the same Deployments, Services, PDBs, HPAs, migration Jobs and "
                    "NetworkPolicies for the same settings (ci/operator-shape-values.yaml, services/operator/tests/chart-shape-stack.yaml)",
                    check_operator_chart_shape, chart)
        if cname == "ecommerce-operator":
            r.check("ecommerce-operator: RBAC rules are k8s/operator/10-rbac.yaml's; with watchNamespace a Role there and no cluster-wide write",
                    check_operator_rbac, chart)
            r.check("ecommerce-operator: the Deployment's name and selector are k8s/operator/20-deployment.yaml's (switching install method)",
                    check_operator_install_parity, chart)

    def kubernetes_validate_cli():
        # The same schemas through the tool's own command line, as a user
        # would run it, over everything rendered above.
        with tempfile.TemporaryDirectory(prefix="packaging-") as tmp:
            path = Path(tmp) / "rendered.yaml"
            path.write_text(yaml.safe_dump_all(cli_docs))
            exe = Path(sys.executable).parent / "kubernetes-validate"
            out = subprocess.run([str(exe), "--strict", "--quiet", "-k", KUBE_VERSION, str(path)],
                                 capture_output=True, text=True)
            lines = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
            if out.returncode != 0 or lines:
                fail(f"kubernetes-validate --strict: exit {out.returncode}: {lines[:5]}")
    if cli_docs:
        r.check(f"kubernetes-validate --strict -k {KUBE_VERSION} (command line) over the {len(cli_docs)} rendered objects", kubernetes_validate_cli)

    r.check("docker-compose.yml: services, build targets, healthchecks, env names, dependencies", check_compose, known)
    r.check("Dockerfile: builder, a target per service, non-root, entrypoint, ports", check_dockerfile)
    if shutil.which("cargo"):
        r.check("Dockerfile: the planner's stub workspace loads in cargo with every target of the real one", check_dockerfile_recipe)
    else:
        print("skip Dockerfile planner check: no cargo on PATH")
    if (ROOT / "Tiltfile").exists():
        r.check("Tiltfile: docker_build per target, helm() renders, resources and port-forwards", check_tiltfile, {})
    else:
        r.check("Tiltfile exists", fail, "no Tiltfile")

    elapsed = time.monotonic() - started
    print(f"checked in {elapsed:.1f} s")
    if r.failed:
        print("failed:")
        for name, detail in r.failed:
            print(f"  {name}: {detail}")
    print(f"packaging: {r.passed} passed, {len(r.failed)} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-monitoring"]:
        sys.exit(write_monitoring())
    if sys.argv[1:]:
        sys.exit(f"usage: {sys.argv[0]} [--write-monitoring]")
    sys.exit(main())
