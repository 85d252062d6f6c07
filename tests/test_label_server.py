"""The labeling server as a real `rlhf-lab stage=label` process, over HTTP: durable through SIGKILLs,
resuming every annotator, checking every request (4xx, nothing written), refusing requests without the
token off loopback, and a reward model trained on a label file produced through it."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter

import pytest

from rlhf_lab.label.human_labels import read_labels
from tests.label_support import LabelServer, events, write_pairs

pytestmark = pytest.mark.slow  # each starts the server: about 2 s a start


@pytest.fixture
def server(tmp_path, lab_home):
    servers = []

    def make(*overrides: str, n: int = 20, **options) -> LabelServer:
        pairs = write_pairs(tmp_path / "pairs.jsonl", n)
        labels = tmp_path / "labels.jsonl"
        s = LabelServer(
            f"label.pairs={pairs}", f"label.labels={labels}", *overrides, home=lab_home, cwd=tmp_path
        )
        servers.append(s)
        return s.start(**options)

    yield make
    for s in servers:
        s.kill()


def test_100_labels_with_a_sigkill_after_every_10_are_all_in_the_file_once(server, tmp_path):
    s = server(n=100)
    acknowledged = []
    for round_ in range(10):
        for _ in range(10):
            pair = s.state("ana")["pair"]["id"]
            status, answer = s.label("ana", pair, choice="ab"[len(acknowledged) % 2])
            assert status == 200 and answer["saved"] == pair, answer
            acknowledged.append(pair)
        s.kill()  # SIGKILL right after the 10th acknowledgement
        if round_ < 9:
            s.start()
            assert s.state("ana")["progress"]["labeled"] == len(acknowledged)  # resumed where she stopped
    written = [e["pair"] for e in events(tmp_path / "labels.jsonl")]
    assert written == acknowledged and len(set(written)) == 100  # all 100, in order, none twice
    assert len(read_labels(str(tmp_path / "labels.jsonl"))) == 100  # what labeler=file trains on


def test_a_retry_after_a_restart_is_not_applied_twice_and_each_annotator_resumes(server, tmp_path):
    s = server()
    first = s.state("ana")["pair"]["id"]
    assert s.label("ana", first, request="retried-request-1")[0] == 200
    second = s.state("bo")["pair"]["id"]
    assert s.label("bo", second, choice="tie")[0] == 200
    s.kill()
    s.start()
    status, answer = s.label("ana", first, request="retried-request-1")  # its answer was lost: sent again
    assert status == 200 and answer["saved"] == first
    assert [e["pair"] for e in events(tmp_path / "labels.jsonl")] == [first, second]
    ana, bo = s.state("ana"), s.state("bo")
    assert ana["last"] == {"pair": first, "choice": "a"} and bo["last"] == {"pair": second, "choice": "tie"}
    assert ana["pair"]["id"] not in (first, second, bo["pair"]["id"])
    assert ana["progress"] == {"labeled": 1, "skipped": 0, "done": 2, "total": 20}


def test_two_annotators_at_once_never_get_the_same_pair(server, tmp_path):
    s = server(n=30)
    taken: dict[str, list[str]] = {"ana": [], "bo": []}

    def work(annotator: str) -> None:
        while (pair := s.state(annotator)["pair"]) is not None:
            status, _ = s.label(annotator, pair["id"])
            if status == 200:
                taken[annotator].append(pair["id"])

    threads = [threading.Thread(target=work, args=(who,)) for who in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not set(taken["ana"]) & set(taken["bo"])
    assert len(taken["ana"]) + len(taken["bo"]) == 30 and taken["ana"] and taken["bo"]
    assert Counter(e["pair"] for e in events(tmp_path / "labels.jsonl")).most_common(1)[0][1] == 1


def body(**change):
    """A label request (on the pair PAIR, filled in by the test) with `change`; None drops a field."""
    base = {"request": "r" * 9, "annotator": "ana", "pair": "PAIR", "choice": "a", "seconds": 1}
    return {k: v for k, v in (base | change).items() if v is not None}


JSON = {"Content-Type": "application/json"}
BAD = [  # (method, path, body or raw bytes, headers, status, message)
    ("POST", "/api/label", body(request=None), {}, 400, "field 'request': missing"),
    ("POST", "/api/label", body(pair="0" * 16), {}, 404, "unknown pair id '0000000000000000'"),
    ("POST", "/api/label", body(choice="c"), {}, 400, "field 'choice': expected one of a, b, tie, skip"),
    ("POST", "/api/label", body(seconds=-2), {}, 400, "field 'seconds': expected a number"),
    ("POST", "/api/label", body(annotator="\n"), {}, 400, "field 'annotator'"),
    ("POST", "/api/label", body(admin=True), {}, 400, "field 'admin': unexpected"),
    ("POST", "/api/label", b"{not json", JSON, 400, "malformed JSON body"),
    ("POST", "/api/label", b"[1, 2]", JSON, 400, "must be a JSON object"),
    ("POST", "/api/label", b"choice=a", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "JSON"),
    ("POST", "/api/label", b"{" + b" " * 20000 + b"}", JSON, 413, "larger"),
    ("POST", "/api/undo", body(choice=None, seconds=None), {}, 409, "the last label"),
    ("POST", "/api/undo", body(choice=None, seconds=None, annotator="cy"), {}, 409, "no label to undo"),
    ("GET", "/api/state", None, {}, 400, "query parameter 'annotator': missing"),
    ("GET", "/nowhere", None, {}, 404, "Not Found"),
    ("DELETE", "/api/label", None, {}, 405, "Method Not Allowed"),
    ("GET", "/", None, {"Host": "attacker.example:80"}, 403, "host 'attacker.example:80' refused"),
    ("POST", "/api/label", body(), {"Origin": "http://attacker.example"}, 403, "cross-origin request"),
]


def test_every_bad_request_gets_a_4xx_with_its_reason_and_writes_nothing(server, tmp_path):
    s = server()
    mine = s.state("ana")["pair"]["id"]
    assert s.label("ana", mine)[0] == 200
    other = s.state("ana")["pair"]["id"]  # ana's next pair: an undo of it is refused (her last is `mine`)
    before = (tmp_path / "labels.jsonl").read_bytes()
    for method, path, body, headers, status, message in BAD:
        if isinstance(body, dict):
            body = json.loads(json.dumps(body).replace("PAIR", other))
            got = s.request(method, path, body=body, headers=headers)
        else:
            got = s.request(method, path, raw=body, headers=headers)
        assert got[0] == status and message in got[1]["error"], (method, path, body, got)
    status, answer = s.label("ana", mine, choice="b")  # labeled already: 409, not a second label
    assert status == 409 and "already labeled" in answer["error"]
    assert (tmp_path / "labels.jsonl").read_bytes() == before


def test_bound_beyond_localhost_nothing_is_served_without_the_token(server):
    s = server("label.host=0.0.0.0")
    assert s.token and len(s.token) >= 20  # generated and printed at start
    for path in ("/", "/static/label.js", "/api/config", "/api/state?annotator=ana", "/summary"):
        status, answer = s.request("GET", path)
        assert status == 401 and "missing access token" in answer["error"], (path, answer)
        status, answer = s.request("GET", path, headers={"Authorization": "Bearer wrong-token"})
        assert status == 403 and answer["error"] == "wrong access token"
    status, _ = s.request("GET", "/api/config", headers={"Authorization": f"Bearer {s.token}"})
    assert status == 200
    pair = s.request("GET", f"/api/state?annotator=ana&token={s.token}")[1]["pair"]["id"]
    status, answer = s.label("ana", pair)  # no token
    assert status == 401


def test_a_configured_token_is_required_on_localhost_too_and_stop_prints_the_summary(
    server, tmp_path, lab_home
):
    s = server("label.token=s3cret-token-for-tests")
    assert s.request("GET", "/api/config")[0] == 401
    auth = {"Authorization": "Bearer s3cret-token-for-tests"}
    pair = s.request("GET", "/api/state?annotator=ana", headers=auth)[1]["pair"]["id"]
    body = {"request": uuid.uuid4().hex, "annotator": "ana", "pair": pair, "choice": "b", "seconds": 3}
    assert s.request("POST", "/api/label", body=body, headers=auth)[0] == 200
    output = s.stop()
    assert s.process.returncode == 0
    assert "| ana | 1 | 1 | 0 | 0 | 3.0 | 3.0 | 0% | 1 |" in output  # b is the worse one by gold
    results = [json.loads(p.read_text()) for p in (lab_home / "runs" / "label").glob("*/result.json")]
    (mine,) = [r for r in results if r["labels"] == str(tmp_path / "labels.jsonl")]
    assert mine["status"] == "completed" and mine["metrics"]["label/labels"] == 1
