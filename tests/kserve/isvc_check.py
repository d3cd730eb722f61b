"""Runs in KServe's own environment ($CPCDRL_KSERVE_PYTHON): check an InferenceService manifest (YAML, argv[1])
against the kserve SDK's published models, which KServe generates from the same OpenAPI schema as its CRD.

Every key must be a field of its model (a misspelt ``storageURI`` fails, where the SDK's own deserializer would
drop it silently), every value of its declared type, and every required field present (the models' constructors
check that). Kubernetes types (V1ObjectMeta, V1ResourceRequirements) come from the kubernetes client the SDK
depends on. Prints "ok", or "invalid: WHY" and exits 1.
"""

import re
import sys

import kserve.models as ks
import kubernetes.client.models as k8s
import yaml

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def build(value, typ: str, path: str):
    inner = re.fullmatch(r"(?:list\[|List\[)(.*)\]", typ)
    if inner:
        if not isinstance(value, list):
            raise TypeError(f"{path}: expected a list")
        return [build(v, inner.group(1), f"{path}[{i}]") for i, v in enumerate(value)]
    inner = re.fullmatch(r"(?:dict\(str, |Dict\[str, )(.*)[)\]]", typ)
    if inner:
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping")
        return {k: build(v, inner.group(1), f"{path}.{k}") for k, v in value.items()}
    if typ in PRIMITIVES:
        if not isinstance(value, PRIMITIVES[typ]) or (typ == "int" and isinstance(value, bool)):
            raise TypeError(f"{path}: expected {typ}, got {value!r}")
        return value
    cls = getattr(ks, typ, None) or getattr(k8s, typ, None)
    if cls is None:
        raise TypeError(f"{path}: no published model {typ}")
    if not isinstance(value, dict):
        raise TypeError(f"{path}: expected a {typ} mapping")
    field = {key: attr for attr, key in cls.attribute_map.items()}
    kwargs = {}
    for k, v in value.items():
        if k not in field:
            raise KeyError(f"{path}.{k}: not a field of {typ}")
        kwargs[field[k]] = build(v, cls.openapi_types[field[k]], f"{path}.{k}")
    return cls(**kwargs)


def main() -> int:
    with open(sys.argv[1]) as f:
        doc = yaml.safe_load(f)
    try:
        if doc.get("apiVersion") != "serving.kserve.io/v1beta1" or doc.get("kind") != "InferenceService":
            raise ValueError(f"apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')}")
        if set(doc) - {"apiVersion", "kind", "metadata", "spec"}:
            raise KeyError(f"top-level keys {sorted(set(doc) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
        build(doc["metadata"], "V1ObjectMeta", "metadata")
        build(doc["spec"], "V1beta1InferenceServiceSpec", "spec")
    except Exception as exc:  # noqa: BLE001 - any failure is the verdict
        print(f"invalid: {exc}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
