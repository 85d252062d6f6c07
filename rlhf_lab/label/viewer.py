"""The run viewer: one HTML file that shows, for each held-out prompt of a run, its completion at every
evaluation step with the step's KL, the completion's gold and the step's mean proxy reward, each change
from the step before marked word by word, so a person sees when and how the text changed (a collapse,
a hack, a repeated frame); a search over prompts and completions and a filter on the gold narrow it.

`render(data)` writes the page; `rlhf_lab.report.viewer` (`rlhf-lab-view`) reads a run and scores it.
The page is self-contained (its style, script and data inline; it opens from disk, works offline) and
shows every text through `textContent`; its Content-Security-Policy allows its own script and style
only (by hash), so no text of a sample can run or load anything.

`data`: {"title": str, "runs": [{"name", "gold": the gold's name or null, "steps": [{"step", "kl",
"gold", "reward"}] (as logged in eval.jsonl), "prompts": [{"prompt": text, "samples": [{"step",
"completion", "gold"}]}]}]}.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"


def _digest(text: str) -> str:
    """A CSP source for an inline script or style: its sha256."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _embedded(data: dict[str, Any]) -> str:
    """`data` as JSON that cannot close its <script> element (every '<' escaped)."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace("\u2028", "\\u2028")


def render(data: dict[str, Any]) -> str:
    """The viewer page of `data` (see the module's docstring)."""
    style = (STATIC / "label.css").read_text() + (STATIC / "viewer.css").read_text()
    script = (STATIC / "viewer.js").read_text()
    policy = f"default-src 'none'; script-src {_digest(script)}; style-src {_digest(style)}; base-uri 'none'"
    values = {
        "POLICY": html.escape(policy, quote=False),  # in a double-quoted attribute; it has no "
        "TITLE": html.escape(data.get("title", "run viewer")),
        "STYLE": style,
        "DATA": _embedded(data),
        "SCRIPT": script,
    }
    template = (STATIC / "viewer.html").read_text()
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: values[m[1]], template)  # one pass: values stay as they are


def write(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data), encoding="utf-8")
    return path
