"""The labeling page's web app (Starlette): the page, a small JSON API, the summary.

    GET  /                       the page (static/index.html, its script and style under /static/)
    GET  /api/config             the guideline, the number of pairs, whether the comparison is blind
    GET  /api/state?annotator=   the annotator's pair now, their progress and their last decision
    POST /api/label              {request, annotator, pair, choice, seconds}: append a decision
    POST /api/undo               {request, annotator, pair}: take back the annotator's latest decision
    GET  /summary, /api/summary  the summary, as a page and as JSON

A decision is appended to the label file and fsynced before its answer (the annotator's next state) is
sent, so the page moves on only once it is on disk. Handlers run on one event loop and do not await
between their checks and their write, so requests apply one at a time. A request that fails a check is
answered with a 4xx and {"error": message} and writes nothing; so is every request without the access
token, when one is required (`Guard`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rlhf_lab.label.assign import Desk, Refused
from rlhf_lab.label.records import CHOICES, MAX_SECONDS, name_problem, parse_label
from rlhf_lab.label.store import LabelStore
from rlhf_lab.label.summary import summarize, to_html

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 16 * 1024  # bytes of a request body
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
COOKIE = "rlhf_label_token"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
HEADERS = [  # on every answer: no script but ours, no framing, no sniffing, no referrer (the token)
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


@dataclass
class Labeling:
    """What the app serves: the desk (pairs, decisions, claims), the open label file and the settings."""

    desk: Desk
    store: LabelStore
    seed: int
    guideline: str
    train: str  # the command that trains a reward model on the label file (or reports a comparison's)
    comparison: tuple[str, str] | None = None  # a blind comparison's policies (A, B); None: pairs

    def summary(self) -> dict[str, Any]:
        """The summary of the label file so far, with the comparison served."""
        ledger = self.desk.ledger
        served = None if self.comparison is None else list(self.comparison)
        return summarize(ledger.decisions(), ledger.undone, len(self.desk.pairs)) | {"served": served}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# ------------------------------------------------------------------------------------------ the guard
class Guard:
    """ASGI middleware before every route: the access token (when one is set), the Host header on a
    loopback address (no DNS rebinding), same-origin writes; then the security headers on the answer."""

    def __init__(self, app, token: str | None, loopback: str | None):
        self.app, self.token, self.loopback = app, token, loopback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self.refusal(request)
        if response is None and self.token and request.query_params.get("token") and request.url.path == "/":
            response = RedirectResponse("/", status_code=303)  # the token goes into a cookie, not the URL
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await (response or self.app)(scope, receive, send_with_headers)

    def refusal(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        if self.loopback and name not in LOOPBACK_NAMES | {self.loopback}:
            return error(403, f"host {host!r} refused: this server answers at {self.loopback} only")
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD") and origin and origin.split("://", 1)[-1] != host:
            return error(403, f"cross-origin request from {origin!r} refused")
        if not self.token:
            return None
        given = _bearer(request) or request.query_params.get("token") or request.cookies.get(COOKIE)
        if not given:
            return error(
                401, "missing access token: open the address with ?token= printed at the server's start"
            )
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return error(403, "wrong access token")
        return None


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


# ------------------------------------------------------------------------------------------ bodies
class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def json_body(request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object with exactly `fields`, each checked; BadRequest names what is wrong."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise BadRequest(415, "send a JSON body with Content-Type: application/json")
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(400, f"malformed JSON body ({err})") from None
    if not isinstance(body, dict):
        raise BadRequest(400, f"the body must be a JSON object with the fields {', '.join(fields)}")
    for key in body:
        if key not in fields:
            raise BadRequest(400, f"field {key!r}: unexpected; expected the fields {', '.join(fields)}")
    for key in fields:
        if key not in body:
            raise BadRequest(400, f"field {key!r}: missing")
        problem = field_problem(key, body[key])
        if problem:
            raise BadRequest(400, f"field {key!r}: {problem}")
    return body


def field_problem(key: str, value: Any) -> str | None:
    if key == "annotator":
        return name_problem(value)
    if key == "request":
        ok = isinstance(value, str) and REQUEST_ID.fullmatch(value)
        return None if ok else "expected 8 to 64 letters, digits, '-' or '_'"
    if key == "pair":
        return None if isinstance(value, str) and 0 < len(value) <= 64 else "expected a pair id"
    if key == "choice":
        return None if value in CHOICES else f"expected one of {', '.join(CHOICES)}, got {value!r:.40}"
    if key == "seconds":
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if number and 0 <= value <= MAX_SECONDS else f"expected a number in [0, {MAX_SECONDS:g}]"
    return None


# ------------------------------------------------------------------------------------------ routes
def state(lab: Labeling, annotator: str) -> dict[str, Any]:
    """What the page shows an annotator: their pair (left a, right b), progress, last decision."""
    pair = lab.desk.next_for(annotator)
    shown = None
    if pair is not None:
        view = pair.shown(lab.seed)
        shown = {"id": pair.id, "prompt": pair.prompt, "a": view["completion_a"], "b": view["completion_b"]}
    last = lab.desk.ledger.last(annotator)
    return {
        "annotator": annotator,
        "pair": shown,
        "progress": lab.desk.progress(annotator),
        "last": {"pair": last.pair, "choice": last.choice} if last else None,
    }


async def get_config(request: Request) -> Response:
    lab: Labeling = request.app.state.lab
    blind = lab.comparison is not None  # the page links no summary: annotators see no win rate
    return JSONResponse({"guideline": lab.guideline, "pairs": len(lab.desk.pairs), "blind": blind})


async def get_state(request: Request) -> Response:
    annotator = request.query_params.get("annotator")
    problem = "missing" if annotator is None else name_problem(annotator)
    if problem:
        return error(400, f"query parameter 'annotator': {problem}")
    return JSONResponse(state(request.app.state.lab, annotator))


async def post_label(request: Request) -> Response:
    lab: Labeling = request.app.state.lab
    body = await json_body(request, ("request", "annotator", "pair", "choice", "seconds"))
    who, pair = body["annotator"], body["pair"]
    if not lab.desk.check_label(who, pair, body["choice"], body["request"]):
        event = {"event": "label", "request": body["request"], "annotator": who, "pair": pair}
        event |= lab.desk.pairs[pair].shown(lab.seed)
        event |= {"choice": body["choice"], "seconds": float(body["seconds"]), "time": _now()}
        decision = parse_label("the new label", 0, event)  # what is written reads back as it is
        row = append(lab, event)
        lab.desk.record_label(dataclasses.replace(decision, row=row))
    return JSONResponse(state(lab, who) | {"saved": pair})


async def post_undo(request: Request) -> Response:
    lab: Labeling = request.app.state.lab
    body = await json_body(request, ("request", "annotator", "pair"))
    who, pair = body["annotator"], body["pair"]
    if not lab.desk.check_undo(who, pair, body["request"]):
        event = {"event": "undo", "request": body["request"], "annotator": who, "pair": pair, "time": _now()}
        append(lab, event)
        lab.desk.record_undo(who, pair, body["request"])
    return JSONResponse(state(lab, who) | {"undone": pair})


def append(lab: Labeling, event: dict[str, Any]) -> int:
    """Append `event` to the label file (fsynced); a failed write is a 503 and nothing is saved."""
    try:
        return lab.store.append(event)
    except OSError as err:
        raise Refused(503, f"the label file could not be written ({err}); nothing was saved") from err


async def get_summary(request: Request) -> Response:
    lab: Labeling = request.app.state.lab
    return HTMLResponse(to_html(lab.summary(), lab.train))


async def get_summary_json(request: Request) -> Response:
    return JSONResponse(request.app.state.lab.summary())


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


async def refused(request: Request, exc: Refused) -> Response:
    return error(exc.status, exc.message)


async def bad_request(request: Request, exc: BadRequest) -> Response:
    return error(exc.status, exc.message)


async def http_error(request: Request, exc: HTTPException) -> Response:
    return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")


def create_app(lab: Labeling, token: str | None, loopback: str | None) -> Starlette:
    """The app for `lab`; `token`: required on every request when set; `loopback`: the loopback address
    the server is bound to (then the Host header must name a loopback host), or None."""
    routes = [
        Route("/", index),
        Route("/api/config", get_config),
        Route("/api/state", get_state),
        Route("/api/label", post_label, methods=["POST"]),
        Route("/api/undo", post_undo, methods=["POST"]),
        Route("/summary", get_summary),
        Route("/api/summary", get_summary_json),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {Refused: refused, BadRequest: bad_request, HTTPException: http_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.lab = lab
    return Guard(app, token, loopback)
