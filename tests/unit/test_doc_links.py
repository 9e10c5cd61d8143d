"""The docs hold together: every relative link in README.md, docs/ and the chart README reaches a file
and, with `#anchor`, a heading in it; README stays a quick start (unit tier: reads files only)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "helm" / "batchinfer" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)|<img src=\"([^\"]+)\"")
_CODE = re.compile(r"```.*?```", re.DOTALL)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces → '-'."""
    headings = re.findall(r"^#+ (.+)$", _CODE.sub("", page.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for match in _LINK.finditer(_CODE.sub("", page.read_text())):
        target = match[1] or match[2]
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading #{anchor})")
    assert broken == [], f"{page.relative_to(ROOT)}: {broken}"


def test_readme_is_a_quick_start() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024, "README.md is a quick start: move details to docs/"
    for needle in ("make demo", "make test", "batchinfer run --input s3://", "| `path` | string |",
                   "](docs/cli.md)", "](docs/reliability.md)", "](docs/kubernetes.md)",
                   "](helm/batchinfer/README.md)"):
        assert needle in readme, needle
