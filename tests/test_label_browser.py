"""The labeling page in a real browser: headless Chromium from the system's packages, driven by
Playwright, against a real `rlhf-lab stage=label` process. The keyboard alone; a SIGKILL of the server
mid-way; two annotators at once; the token off loopback; a reward model trained on what the page wrote.

Without a Chromium these tests are skipped, saying how to run them, except in CI (CI=true) or with
RLHF_LAB_REQUIRE_BROWSER=1, where they fail (tests/label_support.py: chromium_path)."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from rlhf_lab.artifacts import read_manifest
from tests.helpers import DEBUG, SMALL, rlhf_lab
from tests.label_support import CHROMIUM_FLAGS, LabelServer, chromium_path, events, skip_without_browser

pytestmark = [pytest.mark.slow, *skip_without_browser()]
expect.set_options(timeout=20_000)  # a loaded 2-core machine can take seconds to answer a request
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def servers(tmp_path, lab_home):
    started = []

    def make(*overrides: str, pairs: Path | None = None, timeout: float = 180) -> LabelServer:
        given = [f"label.pairs={pairs}"] if pairs else []
        s = LabelServer(
            *given, f"label.labels={tmp_path / 'labels.jsonl'}", *overrides, home=lab_home, cwd=tmp_path
        )
        started.append(s)
        return s.start(timeout)

    yield make
    for s in started:
        s.kill()


def hostile_pairs(path: Path, n: int) -> Path:
    """n pairs whose texts carry HTML that would run if the page did not escape it."""
    rows = [
        {"prompt": f"Review {i} {HOSTILE}", "completion_a": f"<b>good</b> {i}", "completion_b": f"bad & {i}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def open_page(browser, url: str) -> Page:
    page = browser.new_context(viewport={"width": 1100, "height": 760}).new_page()
    page.set_default_timeout(20_000)
    page.goto(url)
    return page


def sign_in(page: Page, name: str) -> None:
    """The name typed and Enter pressed: the keyboard only."""
    page.keyboard.type(name)
    page.keyboard.press("Enter")
    expect(page.locator("#work")).to_be_visible()


def press(page: Page, key: str, counter: str, expected: int, timeout: float = 20_000) -> None:
    """Press `key` and wait until the server acknowledged it (the counter moved)."""
    page.keyboard.press(key)
    expect(page.locator(f"#{counter}")).to_have_text(str(expected), timeout=timeout)


def shown(page: Page) -> tuple[str, str, str]:
    return tuple(page.locator(f"#{i}").text_content() for i in ("prompt", "text-a", "text-b"))


def test_keyboard_alone_with_a_sigkill_midway_loses_nothing_and_resumes(browser, servers, tmp_path):
    s = servers(pairs=hostile_pairs(tmp_path / "pairs.jsonl", 12))
    page = open_page(browser, s.base)
    sign_in(page, "ana")
    prompt, left, right = shown(page)
    assert prompt.endswith(HOSTILE) and page.locator("#prompt img, #prompt script").count() == 0
    assert page.evaluate("window.pwned") is None  # shown as text, never run
    seen = [shown(page)]
    for key, counter, n in [
        ("a", "yours", 1),
        ("ArrowRight", "yours", 2),
        ("t", "yours", 3),
        ("s", "skipped", 1),
    ]:
        press(page, key, counter, n)
        seen.append(shown(page))
    press(page, "u", "skipped", 0)  # undo the skip: that pair is back
    assert shown(page) == seen[3]
    press(page, "b", "yours", 4)

    s.kill()  # SIGKILL with the page open; the next choice waits for the server
    waiting = shown(page)
    page.keyboard.press("a")
    expect(page.locator("#status")).to_contain_text("cannot be reached")
    s.start()
    expect(page.locator("#yours")).to_have_text("5", timeout=30_000)  # sent again, acknowledged once

    page.reload()  # the page resumes: the name is kept, the counts and the next pair come from the file
    expect(page.locator("#yours")).to_have_text("5")
    for n in range(6, 12):
        press(page, "a", "yours", n)
    press(page, "a", "yours", 12)
    expect(page.locator("#finished")).to_be_visible()
    expect(page.locator("#done")).to_have_text("12")

    written = events(tmp_path / "labels.jsonl")
    labels = [e for e in written if e["event"] == "label"]
    assert [e["choice"] for e in labels[:6]] == ["a", "b", "tie", "skip", "b", "a"]
    assert [e["event"] for e in written[:6]] == ["label"] * 4 + ["undo", "label"]
    assert [(e["prompt"], e["completion_a"], e["completion_b"]) for e in labels[:3]] == seen[:3]  # as shown
    assert (labels[5]["prompt"], labels[5]["completion_a"]) == waiting[:2]
    standing = Counter(e["pair"] for e in labels if e["choice"] != "skip")
    assert len(standing) == 12 and max(standing.values()) == 1  # every pair once, none twice


def test_two_annotators_at_once_see_different_pairs_and_the_summary_shows_both(browser, servers, tmp_path):
    s = servers(pairs=hostile_pairs(tmp_path / "pairs.jsonl", 10), timeout=180)
    ana, bo = open_page(browser, s.base), open_page(browser, s.base)  # two contexts: two people
    sign_in(ana, "ana")
    sign_in(bo, "bo <i>")
    for n in range(1, 6):
        assert shown(ana) != shown(bo)
        press(ana, "a", "yours", n)
        press(bo, "b", "yours", n)
    expect(ana.locator("#finished")).to_be_visible()
    expect(bo.locator("#finished")).to_be_visible()
    pairs = [e["pair"] for e in events(tmp_path / "labels.jsonl")]
    assert len(pairs) == 10 == len(set(pairs))
    ana.goto(s.base + "/summary")
    table = ana.locator("table").nth(1)
    expect(table).to_contain_text("bo <i>")  # escaped: the name is text, not markup
    assert ana.locator("table i").count() == 0
    expect(ana.locator("#train-command")).to_contain_text("labeler=file labeler.path=")


def test_bound_beyond_localhost_the_page_needs_the_token(browser, servers, tmp_path):
    s = servers("label.host=0.0.0.0", pairs=hostile_pairs(tmp_path / "pairs.jsonl", 3))
    page = open_page(browser, s.base)
    assert "missing access token" in page.locator("body").text_content()
    page.goto(f"{s.base}/?token={s.token}")  # the address printed at start: a cookie, then the page
    assert "token" not in page.url
    sign_in(page, "ana")
    press(page, "a", "yours", 1)


def test_a_reward_model_trains_on_labels_made_through_the_page(browser, servers, tmp_path, lab_home):
    """rlhf-lab stage=label on the collect artifact (built if missing); a person who agrees with gold
    labels 60 pairs with the keyboard; then one command trains the reward model on the file."""
    s = servers(DEBUG, *SMALL, timeout=900)
    source = Path(re.search(r"serving \d+ pairs from (\S+) on", "".join(s.output))[1])
    gold = {}
    for row in map(json.loads, (source / "preferences.jsonl").read_text().splitlines()):
        gold[(row["prompt"], row["chosen"])] = row["gold_chosen"]
        gold[(row["prompt"], row["rejected"])] = row["gold_rejected"]
    page = open_page(browser, s.base)
    sign_in(page, "ana")
    for n in range(1, 61):
        prompt, a, b = shown(page)
        key = (
            "a"
            if gold[(prompt, a)] > gold[(prompt, b)]
            else "b"
            if gold[(prompt, b)] > gold[(prompt, a)]
            else "t"
        )
        press(page, key, "yours", n)
    output = s.stop()
    assert "| agreement with gold | 100% |" in output
    labels = tmp_path / "labels.jsonl"
    decided = sum(e["choice"] in ("a", "b") for e in events(labels))

    train = shlex.split(re.search(r"train on them: (.+)", "".join(s.output))[1])  # as the page printed it
    assert train == [
        "rlhf-lab",
        "stage=reward",
        DEBUG,
        *(o for o in SMALL if not o.startswith("labeler")),
    ] + [
        "labeler=file",
        f"labeler.path={labels}",
    ]
    done = rlhf_lab(*train[1:], home=lab_home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(
        max((lab_home / "runs" / "reward").glob("*/result.json"), key=lambda p: p.stat().st_mtime).read_text()
    )
    collected = read_manifest(Path(result["artifacts"]["collect"]))["metrics"]
    assert collected["collect/pairs"] == decided  # every label found its pair, nothing else
    assert "reward/val/accuracy" in result["metrics"] and Path(result["artifacts"]["reward"]).is_dir()
