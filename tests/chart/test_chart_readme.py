"""helm/batchinfer/README.md: its values table is generated from values.yaml's `# --` comments and
kept equal; every value is documented; the prerequisites name what the image needs of a GPU node."""
from __future__ import annotations

import json

import yaml

from . import values_doc
from .render import CHART_DIR, REPO_ROOT


def test_values_table_is_generated_from_values_yaml():
    readme = values_doc.README.read_text()
    assert readme == values_doc.render_readme(readme, values_doc.VALUES.read_text()), \
        "helm/batchinfer/README.md is out of date: run python -m tests.chart.values_doc"
    assert values_doc.main(["--check"]) == 0


def test_every_value_has_a_described_row():
    values_text = values_doc.VALUES.read_text()
    rows = values_doc.rows(values_text)
    documented = [row.key for row in rows]
    assert len(documented) == len(set(documented))
    assert all(row.description for row in rows)
    undocumented = [path for path in values_doc.leaf_paths(yaml.safe_load(values_text))
                    if not any(path == key or path.startswith(key + ".") for key in documented)]
    assert undocumented == [], f"add a `# --` comment in values.yaml for: {undocumented}"
    # Every documented key is a chart value the schema knows (no stale rows).
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    for key in documented:
        node = schema
        for part in key.split("."):
            node = node["properties"][part]


def test_values_doc_parser():
    """The helm-docs convention on a small example: continuation lines, sections, documented mappings."""
    text = (
        "# -- Top-level value.\n"
        "top: 1\n"
        "# A section comment is not a description.\n"
        "section:\n"
        "  # -- A nested value,\n"
        "  # continued here.\n"
        "  inner: \"a|b\"\n"
        "  # -- A documented mapping is one row.\n"
        "  mapping:\n"
        "    key: value\n"
        "    list:\n"
        "      - x\n"
        "  undocumented: 2\n"
    )
    rows = values_doc.rows(text)
    assert [(r.key, r.default, r.description) for r in rows] == [
        ("top", 1, "Top-level value."),
        ("section.inner", "a|b", "A nested value, continued here."),
        ("section.mapping", {"key": "value", "list": ["x"]}, "A documented mapping is one row."),
    ]
    table = values_doc.table(rows).splitlines()
    assert table[3] == '| `section.inner` | `"a\\|b"` | A nested value, continued here. |'


def test_readme_states_prerequisites_and_first_step():
    readme = (CHART_DIR / "README.md").read_text()
    for needle in ("KubeRay v1.7.0", "R580", "CUDA 13", "compute capability ≥ 7.5", "make image IMAGE=",
                   "docker push", "helm test", "## Google Cloud (GKE + GCS)", "https://storage.googleapis.com",
                   "HMAC", "Workload Identity cannot provide S3 credentials"):
        assert needle in readme, needle
    notes = (CHART_DIR / "templates" / "NOTES.txt").read_text()
    assert "R580" in notes and "7.5" in notes
    main_readme = (REPO_ROOT / "README.md").read_text()
    assert "R580" in main_readme and "helm/batchinfer/README.md" in main_readme
