"""README.md documents every chart value."""
from __future__ import annotations

import json

from .render import CHART_DIR, REPO_ROOT


def _leaf_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, prop in schema.get("properties", {}).items():
        if name == "global":
            continue
        if prop.get("type") == "object" and prop.get("properties") and name != "resources":
            keys += _leaf_keys(prop, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_value_is_documented():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    docs = (REPO_ROOT / "README.md").read_text()
    keys = _leaf_keys(schema)
    assert len(keys) > 50
    missing = [k for k in keys if f"| `{k}` |" not in docs]
    assert missing == [], f"add these keys to the configuration table in README.md: {missing}"


def test_every_schema_property_has_a_description():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def walk(node, path):
        for name, prop in node.get("properties", {}).items():
            if "$ref" not in prop:
                assert prop.get("description"), f"{path}{name} has no description"
            walk(prop, f"{path}{name}.")

    walk(schema, "")
    walk(schema["$defs"]["workerGroup"], "workerGroups[].")
