"""The labeling page's new views in a real browser (headless Chromium from the system's packages, driven by
Playwright): a blind comparison of two policies judged end to end against a real `rlhf-lab stage=label
label.judge=[A,B]` process, SIGKILLed midway, with the labels written, the sides seeded, and the win
rate and its interval as every report gives them; and the run viewer (`rlhf-lab-view`) searched and
filtered on the gold. Hand-written artifact folders stand in for training runs.

Skipped without a Chromium, except where the browser is required (tests/label_support.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from rlhf_lab.label.pairs import unit
from rlhf_lab.label.records import pair_id
from rlhf_lab.scorers import GoldScorer
from tests.label_support import (
    CHROMIUM_FLAGS,
    LabelServer,
    chromium_path,
    events,
    skip_without_browser,
    two_policies,
    write_run,
)

pytestmark = [pytest.mark.slow, *skip_without_browser()]
expect.set_options(timeout=20_000)  # a loaded 2-core machine can take seconds to answer a request
SEED = 5
HOSTILE = '<img src=x onerror="window.pwned=1">'


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True
        )
        yield browser
        browser.close()


def open_page(browser, url: str) -> Page:
    page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    page.set_default_timeout(20_000)
    page.goto(url)
    return page


def wilson(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out again here: the test's own arithmetic."""
    centre = p + z * z / (2 * n)
    spread = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return ((centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n))


def cell(rate: float, n: int) -> str:
    low, high = wilson(rate, n)
    return f"{rate:.2f} [{low:.2f}, {high:.2f}]"


def texts_of(event: dict, word: str) -> str:
    """The completion of a label event that contains `word`, whichever side it was shown on."""
    return next(event[f"completion_{side}"] for side in "ab" if word in event[f"completion_{side}"])


def a_wins(a: list[float], b: list[float]) -> float:
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b, strict=True)) / len(a)


# ------------------------------------------------------------------------------ people as the judge
def test_a_blind_comparison_judged_in_the_browser_gives_the_win_rate_every_report_gives(
    browser, tmp_path, lab_home
):
    a, b, prompts = two_policies(tmp_path)  # A praises, B pans; the last prompt's two are the same text
    labels = tmp_path / "judged.jsonl"
    s = LabelServer(
        f"label.judge=[{a},{b}]",
        f"label.judge_labels={labels}",
        "label.proxy=vader",
        f"label.seed={SEED}",
        home=lab_home,
        cwd=tmp_path,
    ).start()
    try:
        assert "win rates: rlhf-lab-winrate" in "".join(s.output)
        page = open_page(browser, s.base)
        page.keyboard.type("ana")
        page.keyboard.press("Enter")
        expect(page.locator("#work")).to_be_visible()
        expect(page.locator("#total")).to_have_text("9")  # the same text twice is not shown
        expect(page.locator("#summary-link")).to_be_hidden()  # blind: no win rate in sight
        assert "rl_a" not in page.content() and "rl_b" not in page.content()

        # the person prefers A's praise on prompts 0-4, B's on 5-6, and cannot tell on 7-8
        plan = {i: "A" if i < 5 else "B" if i < 7 else "tie" for i in range(9)}
        shown_left_a = {}
        for n in range(1, 10):
            prompt = page.locator("#prompt").text_content()
            left, right = page.locator("#text-a").text_content(), page.locator("#text-b").text_content()
            i = prompts.index(prompt)
            a_left = "wonderful" in left
            shown_left_a[i] = a_left
            first = min(left, right)  # the side is the seeded coin of the pair
            assert (left == first) == (unit(SEED, "side", pair_id(prompt, left, right)) < 0.5)
            want = plan[i]
            key = "t" if want == "tie" else ("a" if (want == "A") == a_left else "b")
            if (
                n == 4
            ):  # SIGKILL before the 4th choice: the page keeps it and sends it once the server is back
                s.kill()
                page.keyboard.press(key)
                expect(page.locator("#status")).to_contain_text("cannot be reached")
                s.start()
            else:
                page.keyboard.press(key)
            expect(page.locator("#yours")).to_have_text(str(n), timeout=30_000)
        expect(page.locator("#finished")).to_be_visible()
        expect(page.locator("#finished-summary")).to_be_hidden()
        assert 0 < sum(shown_left_a.values()) < 9  # A's completion was shown on both sides

        written = [e for e in events(labels) if e["event"] == "label"]
        assert len(written) == 9 == len({e["pair"] for e in written})  # each once, none lost to the kill
        for e in written:
            assert e["comparison"] == [f"{a.resolve()}@3", f"{b.resolve()}@3"]
            assert (e["policy_a"] == e["comparison"][0]) == ("wonderful" in e["completion_a"])

        rate = (5 + 0.5 * 2) / 9  # A chosen 5 times, B twice, 2 ties: 0.67
        a_text = [
            next(e[f"completion_{s}"] for s in "ab" if "wonderful" in e[f"completion_{s}"]) for e in written
        ]
        b_text = [next(e[f"completion_{s}"] for s in "ab" if "dull" in e[f"completion_{s}"]) for e in written]
        judged_prompts = [e["prompt"] for e in written]
        expected = {"people": cell(rate, 9)}
        for name, scorer in (("gold", GoldScorer("reader")), ("proxy", GoldScorer("vader"))):
            scores = scorer.score(judged_prompts, a_text), scorer.score(judged_prompts, b_text)
            expected[name] = cell(a_wins(scores[0].tolist(), scores[1].tolist()), 9)

        page.goto(s.base + "/summary")  # what the experimenter sees
        table = page.locator("h2:has-text('Blind comparisons') + table tbody tr")
        expect(table).to_have_count(1)
        cells = table.first.locator("td").all_text_contents()
        assert cells[:4] == [f"{tmp_path.name}/rl_a@3", f"{tmp_path.name}/rl_b@3", "9", "2"]
        assert cells[4:] == [expected["people"], expected["gold"], expected["proxy"]]
    finally:
        output = s.stop()
    assert f"| {expected['people']} | {expected['gold']} | {expected['proxy']} |" in output
    result = max((lab_home / "runs" / "label").glob("*/result.json"), key=lambda p: p.stat().st_mtime)
    found = json.loads(result.read_text())["metrics"]
    assert found["label/judge/human_win_rate"] == pytest.approx(rate)
    assert (
        found["label/judge/human_win_rate_low"],
        found["label/judge/human_win_rate_high"],
    ) == pytest.approx(wilson(rate, 9))
    report = subprocess.run(
        [sys.executable, "-m", "rlhf_lab.report.judge", str(labels), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (row,) = json.loads(report.stdout)  # the report command and the eval stage read the same rows
    assert row["human"] == pytest.approx(rate) and row["prompts"] == 9 and row["ties"] == 2


# ------------------------------------------------------------------------------ the run viewer
def test_the_run_viewer_shows_a_prompt_across_steps_with_search_and_a_gold_filter(browser, tmp_path):
    prompts = ["The zebra documentary was", "The sequel was", f"The remake {HOSTILE} was", "The cast was"]
    steps = {
        0: [(p, " fine, I think.") for p in prompts],
        4: [(p, " fine, and moving, I think.") for p in prompts],
        8: [(p, " wonderful wonderful wonderful wonderful.") for p in prompts],
    }
    steps[4][1] = (prompts[1], " fine, I think.")  # the sequel's completion did not change at step 4
    folder = write_run(tmp_path / "rl", steps, kl={0: 0.0, 4: 1.25, 8: 7.5})
    out = tmp_path / "viewer.html"
    done = subprocess.run(
        [sys.executable, "-m", "rlhf_lab.report.viewer", str(folder), "--gold", "vader", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    gold = {s: GoldScorer("vader").score(prompts, [c for _, c in rows]).tolist() for s, rows in steps.items()}

    page = open_page(browser, out.as_uri())
    expect(page.locator("#overview")).to_contain_text("4 prompts × 3 evaluations (steps 0 to 8); gold: vader")
    expect(page.locator("#prompts li")).to_have_count(4)
    rows = page.locator("#steps tbody tr")
    expect(rows).to_have_count(3)  # the first prompt at steps 0, 4, 8
    assert rows.locator("td.kl").all_text_contents() == ["0.000", "1.250", "7.500"]
    assert rows.locator("td.gold").all_text_contents() == [f"{gold[s][0]:.3f}" for s in (0, 4, 8)]
    assert rows.nth(1).locator("mark").all_text_contents() == ["and", "moving,"]  # what changed at step 4
    assert page.evaluate("window.pwned") is None and page.locator("#prompts img").count() == 0

    page.fill("#search", "ZEBRA")  # the search: prompts and completions, any case
    expect(page.locator("#prompts li")).to_have_count(1)
    expect(page.locator("#prompt")).to_have_text(prompts[0])
    page.fill("#search", "sequel")
    expect(page.locator("#prompt")).to_have_text(prompts[1])
    expect(rows.nth(1)).to_have_class("unchanged")

    page.fill("#search", "")
    threshold = (gold[0][0] + gold[8][0]) / 2  # the filter on score: only the later, higher-gold samples
    assert gold[8][0] > threshold > gold[0][0]
    page.fill("#gold-min", f"{threshold:.4f}")
    kept = [s for s in (0, 4, 8) if gold[s][0] >= threshold]
    expect(rows).to_have_count(len(kept))
    assert rows.locator("td.step").all_text_contents() == [str(s) for s in kept]
    page.fill("#gold-min", "2")  # above every gold: nothing left
    expect(page.locator("#nothing")).to_be_visible()
    expect(page.locator("#count")).to_have_text("0 of 4 prompts")
