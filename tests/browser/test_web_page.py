"""The web page in a real browser: Debian's chromium, driven by Playwright, against
`mastering serve` run as a separate process, the way a person uses it.

The page is opened at the stack's own address (``http://127.0.0.1:<api port>/``); it
talks to the API there and uploads to and plays from the S3 emulator on another
port, so the buckets' CORS rules are what let it in. Its uploads report progress,
which makes every one a preflighted CORS request, and the emulator answers preflights
from the bucket's own rules: an origin they do not name cannot upload (tested). moto's
server adds an allow-any-origin header to its other answers (its "global CORS"; turning
it off also drops the header S3 puts on a form upload's answer, so the page could not
upload at all), so for the results bucket the rule is checked by its preflight.

The previews, the table and the plot show what the service itself sent: the job's
previews and its ``analysis``, each checked to be there.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.audio_factory import tone_mix, write_wav
from tests.infra.stack import Deployment, load_template
from tests.local.serve_process import API_KEY, Serve, free_port, running_serve

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
OWNER = "browser-test"
RATE = 44_100
# Guards against a hung page, not a performance check.
JOB_DEADLINE_MS = 120_000
TERMINAL = re.compile(r"^(succeeded|failed|expired|cancelled|error)$")


# ---------------------------------------------------------------- the stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    # `mastering serve` as a user starts it: its defaults must let its own page work.
    with running_serve(tmp_path_factory.mktemp("page-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(stack: Serve) -> dict[str, Any]:
    """The running API's own OpenAPI document: what it takes and answers."""
    document: dict[str, Any] = requests.get(f"{stack.api}/openapi.json", timeout=10).json()
    return document


def accepts(schema: dict[str, Any], model: str, name: str) -> bool:
    return name in schema["components"]["schemas"][model]["properties"]


# ---------------------------------------------------------------- the browser


FOREIGN_HOST = "elsewhere.test"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.skip(
            f"no chromium at {CHROMIUM}: install Debian's (`apt-get install chromium`, as "
            ".ci/run does) or point CHROMIUM_PATH at one"
        )
    args = [
        "--autoplay-policy=no-user-gesture-required",
        # A second name for the loopback stack: the page under an origin nobody allowed.
        f"--host-resolver-rules=MAP {FOREIGN_HOST} 127.0.0.1",
    ]
    if os.geteuid() == 0:
        # Chromium's sandbox refuses to run as root (CI runs as root).
        args.append("--no-sandbox")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield launched
        launched.close()


@dataclass
class OpenPage:
    page: Page
    problems: list[str] = field(default_factory=list)

    def messages(self) -> dict[str, str]:
        """The page's own error messages by code (web/messages.js)."""
        found: dict[str, str] = self.page.evaluate(
            "async () => (await import('./messages.js')).ERROR_MESSAGES"
        )
        return found


@pytest.fixture
def open_page(browser: Browser, stack: Serve) -> Iterator[Callable[..., OpenPage]]:
    """Open the page in a fresh browser context; every one is closed afterwards."""
    contexts = []

    def open_(url: str | None = None) -> OpenPage:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        opened = OpenPage(page)
        page.on("pageerror", lambda error: opened.problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                opened.problems.append(f"console: {message.text}")
                if message.type == "error"
                else None
            ),
        )
        page.goto(url or f"{stack.api}/")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        return opened

    yield open_
    for context in contexts:
        context.close()


def connect(page: Page, key: str = API_KEY) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_label("Owner id").fill(OWNER)
    page.get_by_role("button", name="Connect").click()


def wait_for_end(page: Page) -> str:
    expect(page.locator("body")).to_have_attribute(
        "data-job-status", TERMINAL, timeout=JOB_DEADLINE_MS
    )
    return page.locator("body").get_attribute("data-job-status") or ""


def error_text(page: Page) -> str:
    return page.locator("#error").inner_text() if page.locator("#error").is_visible() else ""


# ---------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tracks")
    return {
        "target": write_wav(
            folder / "my song.wav", tone_mix(4.0, RATE, seed=3, peak_dbfs=-12), RATE
        ),
        "reference": write_wav(folder / "reference.wav", tone_mix(4.0, RATE, seed=8), RATE),
    }


@dataclass
class JobRecorder:
    """Passes the page's job reads through, keeping the last succeeded job's body."""

    job: dict[str, Any] = field(default_factory=dict)

    def __call__(self, route: Route) -> None:
        response = route.fetch()
        body = response.json()
        if body.get("status") == "succeeded":
            self.job = body
        route.fulfill(response=response)


# ---------------------------------------------------------------- the checks on the page


def coloured_pixels(page: Page) -> dict[str, int]:
    """How many pixels of each series' colour the plot's canvas holds."""
    counts: dict[str, int] = page.evaluate(
        """() => {
          const canvas = document.querySelector('#spectrum canvas');
          if (!canvas) return {};
          const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
          const near = (r, g, b, [R, G, B]) =>
            Math.abs(r - R) + Math.abs(g - G) + Math.abs(b - B) < 60;
          // The series' strokes (web/report.js).
          const colours = {
            target: [0x1f, 0x5f, 0xa8], reference: [0x2e, 0x7d, 0x32], result: [0xc6, 0x28, 0x28],
          };
          const counts = { target: 0, reference: 0, result: 0 };
          for (let i = 0; i < data.length; i += 4) {
            if (data[i + 3] < 128) continue;
            for (const [name, colour] of Object.entries(colours)) {
              if (near(data[i], data[i + 1], data[i + 2], colour)) counts[name] += 1;
            }
          }
          return counts;
        }"""
    )
    return counts


def audio_state(page: Page) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = page.evaluate(
        """() => Object.fromEntries(['a', 'b'].map((k) => {
          const audio = document.getElementById('preview-' + k);
          return [k, { time: audio.currentTime, paused: audio.paused, src: audio.currentSrc }];
        }))"""
    )
    return state


def fetch_in_page(page: Page, url: str) -> tuple[int, bytes]:
    """GET ``url`` with the page's fetch (so CORS applies), returning status and body."""
    answer: dict[str, Any] = page.evaluate(
        """async (url) => {
          const response = await fetch(url);
          const bytes = new Uint8Array(await response.arrayBuffer());
          let text = '';
          for (let i = 0; i < bytes.length; i += 0x8000) {
            text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          }
          return { status: response.status, body: btoa(text) };
        }""",
        url,
    )
    return int(answer["status"]), base64.b64decode(answer["body"])


def preflight(url: str, origin: str, method: str) -> int:
    """The status of the CORS preflight a browser would send before ``method`` on ``url``."""
    answer = requests.options(
        url,
        headers={"Origin": origin, "Access-Control-Request-Method": method},
        timeout=10,
    )
    if answer.status_code == 200:
        assert answer.headers["Access-Control-Allow-Origin"] == origin
    return answer.status_code


# ---------------------------------------------------------------- tests


def test_a_person_masters_a_track_in_the_browser(
    open_page: Callable[..., OpenPage],
    tracks: dict[str, Path],
    api_schema: dict[str, Any],
    tmp_path: Path,
) -> None:
    # Given the page, served by the stack at its own address, connected with the key
    opened = open_page()
    page = opened.page
    expect(page.get_by_label("API address")).to_have_value(page.url.rstrip("/"))
    page_origin = page.url.rstrip("/")
    connect(page)
    expect(page.locator("#connection-state")).to_contain_text("Connected")
    # (the presets and the platforms' loudness come from GET /presets)
    expect(page.get_by_label("Preset", exact=True).locator("option")).not_to_have_count(0)
    expect(page.locator("#loudness-platforms option[value=spotify]")).to_have_count(1)
    recorder = JobRecorder()
    page.route(lambda url: urlsplit(url).path.startswith("/jobs/"), recorder)

    # When they pick a target and a reference, two formats, previews where the service
    # makes them, a loudness and a ceiling, and start
    page.get_by_label("Your track (target)").set_input_files(tracks["target"])
    page.get_by_label("Reference track", exact=True).set_input_files(tracks["reference"])
    page.get_by_label("WAV 24-bit").check()
    assert accepts(api_schema, "CreateJobRequest", "previews")
    page.get_by_label("Also make A/B previews").check()
    page.get_by_label("Loudness", exact=True).select_option("spotify")
    page.get_by_label("Ceiling").fill("-1.5")
    page.get_by_role("button", name="Start").click()

    # Then the job runs to the end with progress shown, and succeeds
    expect(page.locator("#progress-text")).not_to_be_empty()
    assert wait_for_end(page) == "succeeded", (error_text(page), opened.problems)
    expect(page.locator("#status")).to_contain_text("Done")
    job = recorder.job
    assert job["mastering"]["loudness_lufs"] == -14.0
    assert job["mastering"]["true_peak_dbtp"] == -1.5
    assert {"preview_target", "preview_result"} <= set(job["results"])
    assert {"target", "reference", "result"} <= set(job["analysis"] or {})

    # And each result is a link to its file, which the page itself can fetch (the
    # results bucket lets this origin in): a WAV as long as the target
    links = page.locator("#downloads a")
    expect(links).to_have_count(len(job["results"]))
    wav16 = page.locator('#downloads a[data-format="wav16"]')
    expect(wav16).to_have_attribute("target", "_blank")
    wav16_url = wav16.get_attribute("href") or ""
    status, body = fetch_in_page(page, wav16_url)
    assert status == 200
    assert body[:4] == b"RIFF"
    assert body[8:12] == b"WAVE"
    with wave.open(io.BytesIO(body)) as result:
        assert result.getframerate() == RATE
        assert abs(result.getnframes() - 4 * RATE) <= RATE // 100
    # (the results bucket's rule names this origin and no other)
    assert preflight(wav16_url, page_origin, "GET") == 200
    assert preflight(wav16_url, "http://elsewhere.test", "GET") == 403

    # And the before/after table has the target, the reference and the result
    rows = page.locator("#loudness-table tbody tr")
    expect(rows).to_have_count(3)
    # (from the analysis when there is one; the page writes a minus sign, not a hyphen)
    measured = (job.get("analysis") or {}).get("result", {}).get("lufs")
    lufs = job["metrics"]["result_lufs"] if measured is None else measured
    expect(rows.nth(2)).to_contain_text(f"{lufs:.1f}".replace("-", "\N{MINUS SIGN}"))

    # And the A/B player switches between the previews at the same position, by keyboard
    player = page.locator("#ab")
    expect(player).to_be_visible()
    page.locator("#ab-play").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.getElementById('preview-a').currentTime > 0.8", timeout=15_000
    )
    before = audio_state(page)["a"]["time"]
    page.keyboard.press("b")
    after = audio_state(page)
    assert after["a"]["paused"]
    assert not after["b"]["paused"]
    assert before - 0.05 <= after["b"]["time"] <= before + 0.5, (before, after)
    expect(page.get_by_label("B: mastered")).to_be_checked()
    # (and back with the radio group's arrow keys)
    page.get_by_label("B: mastered").focus()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_label("A: original")).to_be_checked()
    back = audio_state(page)
    assert back["b"]["paused"]
    assert back["a"]["time"] >= after["b"]["time"] - 0.05
    page.locator("#ab-play").click()

    # And the spectrum plot has drawn all three lines, with the numbers as a table too
    pixels = coloured_pixels(page)
    assert all(count > 50 for count in pixels.values()), pixels
    expect(page.locator("#spectrum-empty")).to_be_hidden()
    expect(page.locator("#spectrum-table tbody tr")).not_to_have_count(0)

    # And nothing went wrong in the page (no script error, no CSP or CORS refusal)
    assert opened.problems == []

    shot = tmp_path / "web-page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "web-page.png")


def test_a_text_file_as_target_shows_the_invalid_audio_message(
    open_page: Callable[..., OpenPage], tracks: dict[str, Path], tmp_path: Path
) -> None:
    # Given the connected page and a text file named like a WAV
    opened = open_page()
    page = opened.page
    connect(page)
    expect(page.locator("#connection-state")).to_contain_text("Connected")
    fake = tmp_path / "not-audio.wav"
    fake.write_text("These are lyrics, not audio.\n" * 40)

    # When it is mastered against a preset
    page.get_by_label("Your track (target)").set_input_files(fake)
    page.get_by_label("a preset").check()
    page.get_by_label("Preset", exact=True).select_option("balanced")
    page.get_by_role("button", name="Start").click()

    # Then the job fails, and the page says why in words, with the service's own message
    assert wait_for_end(page) == "failed"
    expect(page.locator("#error-summary")).to_have_text(opened.messages()["invalid_audio"])
    expect(page.locator("#error-detail")).to_contain_text("(invalid_audio)")
    expect(page.locator("#error")).to_have_attribute("role", "alert")
    expect(page.locator("#results-section")).to_be_hidden()


def test_a_wrong_key_shows_the_unauthorized_message(
    open_page: Callable[..., OpenPage],
) -> None:
    # Given the page
    opened = open_page()
    page = opened.page
    # When someone connects with a wrong key
    connect(page, key="not-the-key")
    # Then they are told the key is wrong, and cannot start a job
    expect(page.locator("#error-summary")).to_have_text(opened.messages()["unauthorized"])
    expect(page.locator("#connection-state")).to_have_text("Not connected.")
    expect(page.get_by_role("button", name="Start")).to_be_disabled()


def test_an_unreachable_api_is_named_as_such(open_page: Callable[..., OpenPage]) -> None:
    # Given the page, with the address of a port nothing listens on
    opened = open_page()
    page = opened.page
    page.get_by_label("API address").fill(f"http://127.0.0.1:{free_port()}")
    # When someone connects
    connect(page)
    # Then the page says the API cannot be reached, and why that may be
    expect(page.locator("#error-summary")).to_contain_text("Could not reach the API")
    expect(page.locator("#error-summary")).to_contain_text("CORS")
    expect(page.locator("#connection-state")).to_have_text("Not connected.")


def test_every_error_code_of_the_api_has_a_message(
    open_page: Callable[..., OpenPage], api_schema: dict[str, Any]
) -> None:
    # Given the codes the running API declares
    codes = set(api_schema["components"]["schemas"]["ErrorCode"]["enum"])
    # When the page's messages are read
    messages = open_page().messages()
    # Then every code has one
    assert codes - set(messages) == set()
    assert all(len(text) > 20 for text in messages.values())


def test_an_origin_the_buckets_do_not_allow_cannot_upload(
    open_page: Callable[..., OpenPage], stack: Serve, tracks: dict[str, Path]
) -> None:
    # Given the same page opened under another origin, which the stack's CORS rules do
    # not name (the browser resolves that name to the stack's address)
    other = f"{stack.api}/".replace("127.0.0.1", FOREIGN_HOST)
    opened = open_page(other)
    page = opened.page
    connect(page)
    expect(page.locator("#connection-state")).to_contain_text("Connected")
    # When a job is started (same-origin API calls work; the upload goes to S3)
    page.get_by_label("Your track (target)").set_input_files(tracks["target"])
    page.get_by_label("a preset").check()
    page.get_by_role("button", name="Start").click()
    # Then the browser refuses the upload, and the page says that CORS may be why
    assert wait_for_end(page) == "error"
    expect(page.locator("#error-summary")).to_contain_text("CORS")
    assert any("CORS" in problem for problem in opened.problems), opened.problems


def test_a_live_job_can_be_cancelled(
    open_page: Callable[..., OpenPage], tracks: dict[str, Path]
) -> None:
    # Given a job whose upload is held up on the way to storage
    opened = open_page()
    page = opened.page
    connect(page)
    expect(page.locator("#connection-state")).to_contain_text("Connected")
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)  # never answered: the upload stays in flight

    page.route(lambda url: "/spectrum-mastering-" in url, hold)
    page.get_by_label("Your track (target)").set_input_files(tracks["target"])
    page.get_by_label("a preset").check()
    page.get_by_role("button", name="Start").click()
    cancel = page.get_by_role("button", name="Cancel job")
    expect(cancel).to_be_visible()
    # When the person cancels it
    cancel.click()
    # Then the service cancels the job and the page says so; a new job can start
    assert wait_for_end(page) == "cancelled", (
        page.locator("#status").inner_text(),
        opened.problems,
    )
    expect(page.locator("#error-summary")).to_have_text(opened.messages()["cancelled"])
    expect(cancel).to_be_hidden()
    expect(page.get_by_role("button", name="Start")).to_be_enabled()


def test_every_control_has_a_label(open_page: Callable[..., OpenPage]) -> None:
    # Given the page, connected, with every part of the form shown
    page = open_page().page
    connect(page)
    expect(page.locator("#connection-state")).to_contain_text("Connected")
    # When its form controls are listed with their accessible names
    unlabelled: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button, progress')]
          .filter((el) => el.type !== 'hidden')
          .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !(el.tagName === 'BUTTON' && el.textContent.trim()))
          .map((el) => el.id || el.outerHTML)"""
    )
    # Then none lacks a label
    assert unlabelled == []


@pytest.mark.parametrize("mode", ["preview", "analyze"])
def test_the_preview_and_analyze_modes(
    open_page: Callable[..., OpenPage],
    tracks: dict[str, Path],
    api_schema: dict[str, Any],
    mode: str,
) -> None:
    assert accepts(api_schema, "CreateJobRequest", "mode")
    # Given the connected page, a target and a reference
    opened = open_page()
    page = opened.page
    connect(page)
    expect(page.locator("#connection-state")).to_contain_text("Connected")
    page.get_by_label("Your track (target)").set_input_files(tracks["target"])
    page.get_by_label("Reference track", exact=True).set_input_files(tracks["reference"])
    # When the job is run in this mode
    page.get_by_label("What to do").select_option(mode)
    page.get_by_role("button", name="Start").click()
    # Then it succeeds, with the measurements in the table and the plot
    assert wait_for_end(page) == "succeeded", error_text(page)
    expect(page.locator("#loudness-table tbody tr")).not_to_have_count(0)
    expect(page.locator("#loudness-caption")).to_contain_text("Measured by the service")
    # (an analysis renders nothing: no result line)
    drawn = {name for name, count in coloured_pixels(page).items() if count > 50}
    assert drawn == (
        {"target", "reference"} if mode == "analyze" else {"target", "reference", "result"}
    )
    if mode == "preview":
        # And the two previews are the results, in the A/B player
        expect(page.locator("#ab")).to_be_visible()
        formats = page.locator("#downloads a").evaluate_all(
            "(links) => links.map((link) => link.dataset.format)"
        )
        assert sorted(formats) == ["preview_result", "preview_target"]
    else:
        # And nothing was rendered: no downloads, no player
        expect(page.locator("#downloads a")).to_have_count(0)
        expect(page.locator("#ab")).to_be_hidden()
    assert opened.problems == []


def test_the_local_buckets_have_the_templates_cors_rules(stack: Serve) -> None:
    # Given the local stack's buckets, and the deployed stack's rules for the same origins
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    buckets = {
        name.rsplit("-", 1)[-1]: name for name in (b["Name"] for b in s3.list_buckets()["Buckets"])
    }
    origins = s3.get_bucket_cors(Bucket=buckets["uploads"])["CORSRules"][0]["AllowedOrigins"]
    # (by default the page's own origin among them)
    assert stack.api in origins
    deployment = Deployment(load_template(), {"AllowedOrigins": origins})
    for role, resource in (("uploads", "UploadsBucket"), ("results", "ResultsBucket")):
        # When both are read
        template_rules = deployment.resolve(deployment.resources[resource]["Properties"])[
            "CorsConfiguration"
        ]["CorsRules"]
        local_rules = s3.get_bucket_cors(Bucket=buckets[role])["CORSRules"]
        # Then they allow the same methods and headers to the same origins
        assert [
            (sorted(r["AllowedMethods"]), r["AllowedOrigins"], r["AllowedHeaders"], r["MaxAge"])
            for r in template_rules
        ] == [
            (
                sorted(r["AllowedMethods"]),
                r["AllowedOrigins"],
                r["AllowedHeaders"],
                r["MaxAgeSeconds"],
            )
            for r in local_rules
        ], role
