"""The docs' command blocks, read from the docs themselves so that the e2e runs what users paste.

Each fenced ```bash block may carry a marker on the line before its fence:

    <!-- cluster-e2e: NAME -->                  run by the e2e test that names it
    <!-- cluster-e2e: cloud-only: REASON -->    targets a cloud (credentials, GPUs) and cannot run here

`test_every_cluster_block_is_run_or_marked` holds every block that talks to a cluster (kubectl, helm,
ray, flux, argocd) to one of the two. A block runs as one bash script under `set -euo pipefail`, with
the cluster's environment; a run may fill in the doc's placeholders (`<registry>`, `...`), skip lines
the e2e itself stands for (make cluster-up: the e2e runs on that cluster) and add evidence commands
before given lines. Every change is named in the test that makes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "kubernetes.md", ROOT / "helm" / "batchinfer" / "README.md"]
MARKER = re.compile(r"<!--\s*cluster-e2e:\s*(.+?)\s*-->")
WATCH = re.compile(r"^kubectl .*\s-w(\s|$)")
TARGETS_CLUSTER = re.compile(r"^\s*(kubectl|helm|ray job|flux|argocd)\b|\|\s*kubectl\b|\$\(kubectl\b", re.M)


@dataclass
class Block:
    path: Path
    line: int
    marker: str | None
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def cloud_only(self) -> bool:
        return bool(self.marker and self.marker.startswith("cloud-only:"))

    def commands(self) -> list[str]:
        """Logical command lines: continuations joined, comments (whole-line and trailing) and blank
        lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        out = []
        for line in joined.splitlines():
            stripped = re.sub(r"\s+#\s.*$", "", line).strip()
            if stripped and not stripped.startswith("#"):
                out.append(stripped)
        return out


def bash_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() in ("```bash", "```sh"):
            marker = MARKER.search(lines[i - 1]) if i else None
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append(Block(path, i + 1, marker.group(1) if marker else None, "\n".join(lines[i + 1:end])))
            i = end
        i += 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for doc in DOCS for block in bash_blocks(doc)]


def block(name: str) -> Block:
    found = [b for b in all_blocks() if b.marker == name]
    assert len(found) == 1, f"exactly one doc block must be marked <!-- cluster-e2e: {name} --> (found {len(found)})"
    return found[0]


def script(doc_block: Block, *, replace: dict[str, str] | None = None, skip: dict[str, str] | None = None,
           before: dict[str, str] | None = None, after: str = "", watch_s: int = 20) -> str:
    """The bash script that runs `doc_block`: `replace` fills placeholders (each must occur), `skip` maps a
    command's start to why the e2e does not run it, `before` a command's start to commands run first.
    A watch (`kubectl get -w`) never ends by itself: it runs for `watch_s` seconds."""
    text = doc_block.text
    for old, new in (replace or {}).items():
        assert old in text, f"{doc_block.where}: the block no longer contains {old!r}"
        text = text.replace(old, new)
    filled = Block(doc_block.path, doc_block.line, doc_block.marker, text)
    out = ["set -euo pipefail"]
    for command in filled.commands():
        reason = next((why for start, why in (skip or {}).items() if command.startswith(start)), None)
        leftover = re.findall(r"<[a-zA-Z][\w -]*>|=\.\.\.|\.\.\.(?=\s|$)", command)
        assert reason or not leftover, f"{doc_block.where}: unfilled placeholders {leftover} in {command!r}"
        if reason:
            out.append(f"echo {_quote('# not run by the e2e: ' + command + ' (' + reason + ')')}")
            continue
        out += [hook for start, hook in (before or {}).items() if command.startswith(start)]
        out.append(f"echo {_quote('$ ' + command)}")
        out.append(f"timeout {watch_s} {command} || test $? = 124" if WATCH.search(command) else command)
        if command.endswith("&"):
            out.append("sleep 3  # a background command (port-forward) gets the moment a person gives it")
    if after:
        out.append(after)
    return "\n".join(out) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
