"""Every chart value is documented (the chart README's generated table), node shapes in docs/kubernetes.md."""
from __future__ import annotations

import json

from .render import CHART_DIR, REPO_ROOT


def _leaf_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, prop in schema.get("properties", {}).items():
        if name == "global":
            continue
        # A section (an object with its own keys) holds rows; a map (labels: any key) is one row.
        if (prop.get("type") == "object" and prop.get("properties") and prop.get("additionalProperties") is False
                and name != "resources"):
            keys += _leaf_keys(prop, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_value_is_documented():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    docs = (CHART_DIR / "README.md").read_text()
    keys = _leaf_keys(schema)
    assert len(keys) > 50
    # A key is documented by its own row or by the row of the object holding it (e.g. deletionStrategy).
    prefixes = lambda key: [".".join(key.split(".")[:n]) for n in range(key.count(".") + 1, 0, -1)]
    missing = [k for k in keys if not any(f"| `{p}` |" in docs for p in prefixes(k))]
    assert missing == [], f"document these keys in values.yaml (# -- comments), then run python -m tests.chart.values_doc: {missing}"


def test_every_schema_property_has_a_description():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def walk(node, path):
        for name, prop in node.get("properties", {}).items():
            if prop is False:  # a key the schema refuses (KubeRay's pod labels): nothing to describe
                continue
            if "$ref" not in prop:
                assert prop.get("description"), f"{path}{name} has no description"
            walk(prop, f"{path}{name}.")

    walk(schema, "")
    for name in ("workerGroup", "memory", "shmSize", "podLabels", "rayStartParams"):
        assert schema["definitions"][name].get("description"), f"definitions.{name} has no description"
    walk(schema["definitions"]["workerGroup"], "workerGroups.<name>.")


def test_node_shapes_and_their_values_files_are_documented():
    """docs/kubernetes.md names every node shape the tests size pods against, and every values file
    sized for one."""
    from .conftest import VALUES_FILES
    from .node_shapes import SHAPES

    docs = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    missing = [shape for shape in SHAPES if f"| {shape} |" not in docs]
    missing += [f.name for f in VALUES_FILES if f.stem.startswith("node-") and f"`{f.name}`" not in docs]
    assert missing == [], f"document these in docs/kubernetes.md (Node shapes): {missing}"
    readme = (REPO_ROOT / "README.md").read_text()
    assert "](docs/kubernetes.md)" in readme
