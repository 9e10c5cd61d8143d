"""The run report: the real job (SeaweedFS S3, two-node Ray, pretrained EfficientNet-Lite0) writes it
next to its summary; its numbers equal the summary's; `batchinfer report` rebuilds it; and a real
headless Chromium (Debian's package, installed here when missing) renders it offline with no console
error and visible charts.

The browser is driven over the Chrome DevTools Protocol on `--remote-debugging-pipe` (NUL-delimited
JSON on fds 3/4, as documented at https://chromedevtools.github.io/devtools-protocol/).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections import Counter
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image

from batchinfer.report import COLORS, THUMBNAILS
from batchinfer.layout import REPORT, SUMMARY, Output
from batchinfer.storage import read_bytes, resolve
from tests.support import RAY_ENV, run_cli

LITE0 = "timm:efficientnet_lite0"
OUTPUT = "s3://samples/out/report/"
# class folder/name → sample object: some right, some wrong, three that cannot be decoded.
LABELED = {
    "espresso/coffee.png": "photos/coffee.png", "espresso/coffee-rotated.jpg": "generated/coffee-rotated.jpg",
    "tabby/chelsea.png": "photos/chelsea.png", "goldfish/astronaut.png": "photos/astronaut.png",
    "goldfish/rocket.jpg": "photos/rocket.jpg", "tabby/checkerboard.jpg": "generated/checkerboard.jpg",
    "goldfish/motorcycle.png": "photos/motorcycle_left.png", "broken/truncated.jpg": "generated/truncated.jpg",
}
NOT_IMAGES = ["broken/not-an-image.jpg", "broken/not-an-image-either.jpg"]
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,900"]


@pytest.fixture(scope="module")
def finished(ray_cluster, s3, samples, s3_options) -> tuple[Output, dict]:
    """One real run with --label-from-path over labeled sample photos; its output and summary."""
    client = s3.client()
    for key, source in LABELED.items():
        body = client.get_object(Bucket="samples", Key=f"images/{source}")["Body"].read()
        client.put_object(Bucket="samples", Key=f"report-in/{key}", Body=body)
    for key in NOT_IMAGES:
        client.put_object(Bucket="samples", Key=f"report-in/{key}", Body=b"plain text, not an image")
    result = run_cli(["run", "--input", "s3://samples/report-in/", "--output", OUTPUT, "--model", LITE0,
                      "--weights", samples["checkpoint"], "--label-from-path", r"report-in/([^/]+)/",
                      "--batch-size", "4", "--rows-per-file", "3"], {**os.environ, **s3.env(), **RAY_ENV})
    assert result.returncode == 0, result.stderr[-3000:]
    output = Output(resolve(OUTPUT, s3_options), s3_options)
    return output, json.loads(read_bytes(output.fs, output.meta.join(SUMMARY)))


class _Stats(HTMLParser):
    """The figures a report page shows: `data-stat` cells and the error-kind table rows."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.stats: dict[str, tuple[str, str]] = {}
        self.kinds: dict[str, int] = {}
        self._open: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if "data-stat" in attributes:
            self._open = attributes["data-stat"]
            self.stats[self._open] = (attributes["data-value"], "")
        if tag == "tr" and "data-kind" in attributes:
            self.kinds[attributes["data-kind"]] = int(attributes["data-count"])

    def handle_data(self, data: str) -> None:
        if self._open:
            self.stats[self._open] = (self.stats[self._open][0], self.stats[self._open][1] + data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def expected_kinds(output: Output, summary: dict) -> Counter:
    """Error rows per kind, counted here from the Parquet: the `error_kind` column when the output has
    one, else the exception type that starts each message."""
    table = pq.read_table(output.location.path, filesystem=output.fs)
    failed = [row for row in table.to_pylist() if row["error"] is not None]
    assert len(failed) == summary["errors"]
    if "error_kind" in table.column_names:
        return Counter(row["error_kind"] for row in failed)
    return Counter(row["error"].split(":", 1)[0] for row in failed)


def assert_page_matches_summary(page: str, output: Output, summary: dict) -> None:
    shown = _Stats(page)
    for key in ("rows", "ok", "errors"):
        value, text = shown.stats[key]
        assert int(value) == summary[key] and text.replace(",", "") == str(summary[key]), (key, value, text)
    value, text = shown.stats["accuracy"]
    assert float(value) == summary["accuracy"] and text == f"{summary['accuracy']:.1%}"
    assert sum(shown.kinds.values()) == summary["errors"]
    expected = expected_kinds(output, summary)
    by_kind = Counter()
    for kind, count in shown.kinds.items():
        by_kind[kind if kind in expected else kind.split(":", 1)[0]] += count
    assert by_kind == expected


def test_report_next_to_summary_equals_summary(finished) -> None:
    output, summary = finished
    assert summary["rows"] == len(LABELED) + len(NOT_IMAGES) and summary["errors"] == 3
    assert 0 < summary["accuracy"] < 1
    started, finished_at = (datetime.fromisoformat(summary[key]) for key in ("started_at", "finished_at"))
    assert all(started <= datetime.fromisoformat(entry["written_at"]) <= finished_at for entry in summary["files"])
    page = read_bytes(output.fs, output.meta.join(REPORT)).decode()
    assert_page_matches_summary(page, output, summary)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing to fetch: opens offline
    if "error_kind" not in pq.read_schema(output.fs.open_input_file(
            output.location.join(summary["files"][0]["name"]))).names:  # two messages, one kind
        assert len(_Stats(page).kinds) == 2 and expected_kinds(output, summary) == Counter(
            {"OSError": 1, "UnidentifiedImageError": 2})
    # The Parquet prefix still reads as a dataset, with the report beside it.
    assert pq.read_table(output.location.path, filesystem=output.fs).num_rows == summary["rows"]
    assert ds.dataset(output.location.path, filesystem=output.fs, format="parquet").count_rows() == summary["rows"]


def test_report_command_rebuilds_it(finished, cli_env, tmp_path) -> None:
    output, summary = finished
    output.fs.delete_file(output.meta.join(REPORT))
    result = run_cli(["report", OUTPUT], cli_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_page_matches_summary(read_bytes(output.fs, output.meta.join(REPORT)).decode(), output, summary)
    local = tmp_path / "report.html"
    result = run_cli(["report", OUTPUT, "-o", str(local)], cli_env)
    assert result.returncode == 0 and str(local) in result.stdout, result.stderr[-3000:]
    assert_page_matches_summary(local.read_text(), output, summary)


@pytest.mark.parametrize(("args", "needle"), [
    (["s3://samples/out/never-written/"], "holds no finished run"),
    ([OUTPUT, "-o", "/nonexistent-dir/report.html"], "directory does not exist"),
])
def test_report_command_mistakes(s3, samples, cli_env, args, needle) -> None:
    result = run_cli(["report", *args], cli_env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr[-2000:]


@pytest.fixture(scope="session")
def chromium(tmp_path_factory) -> str:
    """Debian's chromium, installed with apt when missing (as docker/e2e.sh installs docker.io)."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and apt-get (as root) is unavailable to install Debian's chromium")
    log = tmp_path_factory.mktemp("apt") / "apt.log"
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    with log.open("w") as out:
        if subprocess.run(install, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], stdout=out, stderr=subprocess.STDOUT)
            if subprocess.run(install, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                pytest.fail(f"apt-get install chromium failed:\n{log.read_text()[-3000:]}")
    return shutil.which("chromium")


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class DevTools:
    """A headless Chromium driven over the DevTools protocol on a pipe; records every event."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser, self._writer = os.pipe()
        self._reader, from_browser = os.pipe()
        # Redirections `3<&N 4>&M` must not read a descriptor an earlier one replaced: keep N, M above 9.
        to_browser, from_browser = (_above_nine(fd) for fd in (to_browser, from_browser))
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}', binary, *BROWSER_FLAGS,
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL, stderr=(profile.parent / "chromium.log").open("wb"))
        os.close(to_browser)
        os.close(from_browser)
        self.events: list[dict] = []
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._reader], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._reader, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, timeout_s: float = 60, **params) -> dict:
        self._next_id += 1
        request = {"id": self._next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = self.session
        os.write(self._writer, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._receive(deadline)
            if message.get("id") == self._next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._receive(deadline))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)["result"].get("value")

    def problems(self) -> list[dict]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        return [event for event in self.events if
                (event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] in ("error", "assert"))
                or event.get("method") == "Runtime.exceptionThrown"
                or (event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=10)
        except (TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._writer)
        os.close(self._reader)


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[index:index + 2], 16) for index in (1, 3, 5))


def test_report_in_headless_chromium(finished, chromium, tmp_path) -> None:
    output, summary = finished
    page = tmp_path / "report.html"
    page.write_bytes(read_bytes(output.fs, output.meta.join(REPORT)))
    browser = DevTools(chromium, tmp_path / "profile")
    try:
        browser.call("Page.navigate", session=True, url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        assert browser.problems() == []
        requested = [event["params"]["request"]["url"] for event in browser.events
                     if event.get("method") == "Network.requestWillBeSent"]
        assert requested and all(url.startswith(("file:", "data:")) for url in requested), requested
        charts = browser.evaluate("Array.from(document.querySelectorAll('section svg'))"
                                  ".map(svg => [svg.getBoundingClientRect().width, svg.getBoundingClientRect().height])")
        assert len(charts) == 5 and all(width > 300 and height > 80 for width, height in charts), charts
        thumbnails = browser.evaluate("Array.from(document.images).map(image => image.naturalWidth)")
        assert len(thumbnails) == min(summary["ok"], THUMBNAILS) and all(width > 0 for width in thumbnails), thumbnails
        assert_page_matches_summary(browser.evaluate("document.documentElement.outerHTML"), output, summary)
        size = browser.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        shot = browser.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        browser.evaluate("console.error('probe')")  # the error capture itself works
        assert len(browser.problems()) == 1
    finally:
        browser.close()
    screenshot = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.width >= 1000 and screenshot.height >= 2000
    colours = Counter(screenshot.get_flattened_data())
    assert len(colours) > 1000  # photos, charts and text, not a blank page
    for name in ("bar", "low", "error", "ok"):  # every chart colour is painted in solid areas
        assert colours[_rgb(COLORS[name])] > 200, name
