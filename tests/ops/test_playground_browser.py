"""The playground in a real headless Chromium (Debian's), driven by Playwright's Python client,
against the session's Ray Serve app: what the page renders must be what the API answers.

Screenshots land in tests/artifacts/ (gitignored). The tests skip only when no chromium is
installed and scripts/install_browser.sh cannot install one; a missing `playwright` package
is an install error (it is a test dependency) and fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.helpers import REPO, b64, encode, natural_image

HUB_ID = "openai/clip-vit-base-patch32"
WIDE_ID = "local/tiny-wide"
ARTIFACTS = REPO / "tests" / "artifacts"
# Headless and quiet: no GPU, no sandbox (CI runs as root), nothing that phones home.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def find_chromium() -> str:
    """The system chromium; installed on the spot if missing, else the test skips saying why."""
    override = os.environ.get("CLIP_SERVE_CHROMIUM")
    if override:
        assert Path(override).is_file(), f"CLIP_SERVE_CHROMIUM={override} does not exist"
        return override
    found = shutil.which("chromium")
    if found:
        return found
    try:
        result = subprocess.run(
            [shutil.which("bash") or "/bin/bash", str(REPO / "scripts" / "install_browser.sh")],
            capture_output=True, text=True, timeout=900,
        )
        reason = (result.stderr or result.stdout).strip()[-400:] or f"exit status {result.returncode}"
    except OSError as exc:
        reason = f"cannot run the script: {exc}"
    found = shutil.which("chromium")
    if found:
        return found
    pytest.skip(f"no browser: chromium is not installed and scripts/install_browser.sh could not install it ({reason})")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh profile every run
            executable_path=executable,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1100, "height": 900},
        )
        yield context
        context.close()


class Console:
    """Errors the page raised or logged (CSP violations show up here)."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def script_errors(self) -> list[str]:
        # Failed API calls log "Failed to load resource" by design when a test provokes them.
        return [e for e in self.errors if "Failed to load resource" not in e]


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.console = Console(page)
    page.goto(server + "/")
    page.wait_for_selector(f"#model option[value='{HUB_ID}']", state="attached")
    yield page
    page.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def write_png(folder: Path, name: str, seed: int, size=(64, 48)) -> tuple[Path, bytes]:
    data = encode(natural_image(*size, seed=seed))
    path = folder / name
    path.write_bytes(data)
    return path, data


def drop_files(page, target: str, files: list[tuple[str, bytes]]) -> None:
    """What dragging files from the desktop onto `target` delivers: a drop event with a DataTransfer."""
    page.evaluate(
        """([target, files]) => {
            const dt = new DataTransfer();
            for (const [name, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], name, {type: "image/png"}));
            }
            document.querySelector(target).dispatchEvent(
                new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [target, [[name, b64(data)] for name, data in files]],
    )


def rendered_predictions(card) -> list[dict]:
    """One result card's rows as shown: data- attributes (full values) and the visible text."""
    return card.locator("[data-label]").evaluate_all(
        """rows => rows.map(r => ({
            label: r.dataset.label, score: Number(r.dataset.score), cosine: Number(r.dataset.cosine),
            prob: r.querySelector('.prob').textContent, cos: r.querySelector('.cos').textContent,
            shown_label: r.querySelector('.label').textContent}))"""
    )


def test_classify_renders_the_apis_probabilities_and_cosines(page, client, tmp_path):
    uploads = [write_png(tmp_path, "photo.png", seed=3), write_png(tmp_path, "second.png", seed=4, size=(40, 56))]
    # Labels are user text: markup must show as typed, never become elements.
    labels = ["cat", "a red car", "<img src=x>"]
    template = "a photo of a {}."
    page.select_option("#model", HUB_ID)
    page.set_input_files("#classify-files", [str(path) for path, _ in uploads])
    page.fill("#labels", "\n".join(labels))
    page.fill("#template", template)
    page.click("#classify-button")
    page.locator("#classify-results [data-label]").first.wait_for()

    api = client.post(
        "/v1/classify",
        json={"model": HUB_ID, "input": [{"image": b64(d)} for _, d in uploads], "labels": labels,
              "hypothesis_template": template},
    )
    assert api.status_code == 200, api.text
    cards = page.locator("#classify-results article")
    assert cards.count() == len(uploads)
    for i, (path, _) in enumerate(uploads):
        card = cards.nth(i)
        assert card.get_attribute("data-index") == str(i)
        assert card.locator("h3").text_content() == path.name
        assert card.locator("img").count() == 1  # the thumbnail only: no label became an <img>
        rendered = rendered_predictions(card)
        expected = {p["label"]: p for p in api.json()["data"][i]["predictions"]}
        assert sorted(r["label"] for r in rendered) == sorted(labels)
        assert [r["score"] for r in rendered] == sorted((r["score"] for r in rendered), reverse=True)  # best first
        for row in rendered:
            want = expected[row["label"]]
            assert row["score"] == pytest.approx(want["score"], abs=1e-6)
            assert row["cosine"] == pytest.approx(want["cosine"], abs=1e-6)
            # What the eye reads: 4 decimals of the same numbers.
            assert row["prob"] == f"{row['score']:.4f}" and abs(float(row["prob"]) - want["score"]) <= 5e-5 + 1e-6
            assert row["cos"] == f"{row['cosine']:.4f}"
            assert row["shown_label"] == row["label"]
    assert page.locator("#error").is_hidden()
    screenshot(page, "playground-classify")
    assert page.console.errors == []


def test_rank_tab_orders_dropped_images_like_the_api(page, client):
    images = [(f"img-{seed}.png", encode(natural_image(64, 64, seed=seed))) for seed in (11, 12, 13, 14)]
    query = "a diagram of a cat"
    page.select_option("#model", WIDE_ID)
    page.click("#tab-rank")
    assert page.locator("#panel-classify").is_hidden()
    drop_files(page, "#rank-drop", images)
    assert page.locator("#rank-previews img").count() == len(images)
    page.fill("#query", query)
    page.click("#rank-button")
    ranked = page.locator("#rank-results [data-index]")
    ranked.first.wait_for()
    rendered = ranked.evaluate_all(
        "items => items.map(i => [Number(i.dataset.index), Number(i.dataset.score), i.querySelector('.name').textContent])"
    )

    api = client.post(
        "/v1/rerank", json={"model": WIDE_ID, "query": query, "documents": [{"image": b64(d)} for _, d in images]}
    )
    assert api.status_code == 200, api.text
    results = api.json()["results"]
    assert [index for index, _, _ in rendered] == [r["index"] for r in results]
    for (index, score, name), r in zip(rendered, results):
        assert score == pytest.approx(r["relevance_score"], abs=1e-6)
        assert name == images[index][0]
    screenshot(page, "playground-rank")
    assert page.console.errors == []


def test_api_errors_are_shown_with_message_and_param(page, client, tmp_path):
    path, data = write_png(tmp_path, "one.png", seed=5)
    page.click("#classify-button")  # no image yet: says so without calling the API
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "at least one image" in error.text_content()

    page.set_input_files("#classify-files", str(path))
    page.fill("#labels", "cat")
    page.click("#classify-button")
    page.wait_for_selector("#error[data-status='400']")
    api = client.post("/v1/classify", json={"model": HUB_ID, "input": [{"image": b64(data)}], "labels": ["cat"]})
    assert api.status_code == 400
    envelope = api.json()["error"]
    assert error.locator(".status").text_content() == "HTTP 400"
    assert error.locator(".message").text_content() == envelope["message"]
    assert error.get_attribute("data-param") == envelope["param"] == "labels"
    assert error.get_attribute("data-code") == envelope["code"]
    screenshot(page, "playground-error")

    page.fill("#labels", "cat, dog")  # fixed: the error goes away
    page.click("#classify-button")
    page.locator("#classify-results [data-label]").first.wait_for()
    assert error.is_hidden()
    assert page.console.script_errors() == []


def test_api_key_is_sent_as_bearer_on_every_call_and_kept_for_the_session(page, server, tmp_path):
    path, _ = write_png(tmp_path, "key.png", seed=6)
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))) if "/v1/" in r.url else None)
    page.fill("#api-key", "sk-test-123")
    page.dispatch_event("#api-key", "change")  # reloads the model list with the key
    page.set_input_files("#classify-files", str(path))
    page.fill("#labels", "cat\ndog")
    page.click("#classify-button")
    page.locator("#classify-results [data-label]").first.wait_for()
    called = {url.removeprefix(server + "/"): auth for url, auth in sent}
    assert called == {"v1/models": "Bearer sk-test-123", "v1/classify": "Bearer sk-test-123"}
    assert page.evaluate("sessionStorage.getItem('clip-serve-api-key')") == "sk-test-123"
    assert page.evaluate("localStorage.length") == 0  # never persisted beyond the tab

    sent.clear()
    page.reload()  # same tab: the key is still there and used from the first call on
    page.wait_for_selector(f"#model option[value='{HUB_ID}']", state="attached")
    assert page.input_value("#api-key") == "sk-test-123"
    assert sent and all(auth == "Bearer sk-test-123" for _, auth in sent)


def test_unauthorized_answer_is_explained(page, tmp_path):
    """Once auth is on (issue 8), a wrong key gets a 401 envelope with WWW-Authenticate;
    the page must say so and point at the key field."""
    path, _ = write_png(tmp_path, "auth.png", seed=7)
    envelope = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                          "param": None, "code": "invalid_api_key"}}
    page.route("**/v1/classify", lambda route: route.fulfill(
        status=401, headers={"WWW-Authenticate": 'Bearer realm="clip-serve"'},
        content_type="application/json", body=json.dumps(envelope)))
    page.set_input_files("#classify-files", str(path))
    page.click("#classify-button")
    page.wait_for_selector("#error[data-status='401']")
    error = page.locator("#error")
    assert error.locator(".message").text_content() == "Incorrect API key provided."
    assert error.get_attribute("data-code") == "invalid_api_key"
    assert "API key" in error.locator(".hint").text_content()
    assert page.console.script_errors() == []
