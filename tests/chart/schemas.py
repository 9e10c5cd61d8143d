"""Validation helpers: KubeRay CRD openAPIV3Schema (jsonschema) and Kubernetes schemas
(kubernetes-validate), plus the API server's structural pruning rule for unknown fields."""
from __future__ import annotations

from typing import Any, Iterator

import jsonschema
import kubernetes_validate


def crd_errors(instance: dict, schema: dict) -> list[str]:
    """jsonschema errors of `instance` against a CRD openAPIV3Schema (Draft 7 semantics
    cover every keyword controller-gen emits; x-kubernetes-* extensions are ignored by jsonschema)."""
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))]


def unknown_fields(instance: Any, schema: dict, path: str = "") -> Iterator[str]:
    """Fields the API server would silently prune: keys not declared in a structural schema
    (no additionalProperties and no x-kubernetes-preserve-unknown-fields)."""
    if isinstance(instance, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        for key, value in instance.items():
            sub = f"{path}.{key}" if path else key
            if props is not None and key in props:
                yield from unknown_fields(value, props[key], sub)
            elif isinstance(addl, dict):
                yield from unknown_fields(value, addl, sub)
            elif props is not None and addl is None:
                if path == "metadata" or path.endswith(".metadata"):
                    continue  # ObjectMeta is typed `object` without properties in CRDs
                yield sub
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(instance):
            yield from unknown_fields(item, schema["items"], f"{path}[{i}]")


def k8s_errors(obj: dict, version: str) -> list[str]:
    """kubernetes-validate --strict errors of a built-in Kubernetes object."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


def pod_templates(rayjob: dict) -> Iterator[tuple[str, dict]]:
    """(name, PodTemplateSpec) of the head, every worker group and the submitter."""
    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    yield "head", cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield f"worker:{group['groupName']}", group["template"]
    if "submitterPodTemplate" in spec:
        yield "submitter", spec["submitterPodTemplate"]


def as_pod_template_object(name: str, template: dict) -> dict:
    """Wrap a PodTemplateSpec as a core/v1 PodTemplate so kubernetes-validate checks it strictly."""
    return {"apiVersion": "v1", "kind": "PodTemplate",
            "metadata": {"name": name.replace(":", "-")}, "template": template}
