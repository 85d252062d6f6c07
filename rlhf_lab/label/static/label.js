// The labeling page: shows the annotator's pair, sends each choice, and moves on only once the server
// has written it to disk. Every text from the pairs goes in through textContent (never as HTML).
// A request the server did not answer (it is down, restarting) is sent again, with the same request id,
// until it answers: the server recognizes a retry of a request it already applied.
"use strict";

const $ = (id) => document.getElementById(id);
const NAME_KEY = "rlhf_label_annotator";
const KEYS = {
  a: "a", arrowleft: "a", 1: "a",
  b: "b", arrowright: "b", 2: "b",
  t: "tie", 3: "tie",
  s: "skip", 0: "skip",
};
const WORDS = { a: "A", b: "B", tie: "tie", skip: "skip" };
const MAX_SECONDS = 86400;

let annotator = "";
let current = null; // the server's last state: {annotator, pair, progress, last}
let shownAt = 0;
let busy = false;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function requestId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes); // (crypto.randomUUID needs a secure context; this does not)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function say(text, kind = "info") {
  const status = $("status");
  status.textContent = text;
  status.dataset.kind = kind;
}

// One HTTP call; retried while the server is unreachable or failing (5xx). Returns {ok, status, data}.
async function call(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await fetch(path, options);
      let data = null;
      try {
        data = await response.json();
      } catch (err) {
        data = { error: `unexpected answer (${response.status})` };
      }
      if (response.status < 500) return { ok: response.ok, status: response.status, data };
      say(`the server failed (${data.error}); trying again…`, "warn");
    } catch (err) {
      say("the server cannot be reached; your choice is kept and sent when it is back…", "warn");
    }
    await sleep(Math.min(2000, 200 * attempt));
  }
}

function show(state) {
  current = state;
  $("done").textContent = state.progress.done;
  $("total").textContent = state.progress.total;
  $("yours").textContent = state.progress.labeled;
  $("skipped").textContent = state.progress.skipped;
  $("who-label").textContent = state.annotator;
  $("undo").disabled = !state.last;
  const pair = state.pair;
  $("work").hidden = !pair;
  $("finished").hidden = Boolean(pair);
  document.body.dataset.pair = pair ? pair.id : "";
  if (pair) {
    $("prompt").textContent = pair.prompt;
    $("text-a").textContent = pair.a;
    $("text-b").textContent = pair.b;
    shownAt = performance.now();
  }
}

async function refresh() {
  const answer = await call("GET", `/api/state?annotator=${encodeURIComponent(annotator)}`);
  if (answer.ok) show(answer.data);
  else say(answer.data.error, "error");
}

// Send a label or an undo; on a refusal (4xx), say why and show what the server says is next.
async function send(path, body, done) {
  if (busy) return;
  busy = true;
  document.body.classList.add("busy");
  say("saving…");
  try {
    const answer = await call("POST", path, body);
    if (answer.ok) {
      show(answer.data);
      say(done, "ok");
    } else {
      say(answer.data.error, "error");
      await refresh();
    }
  } finally {
    busy = false;
    document.body.classList.remove("busy");
  }
}

function choose(choice) {
  if (!current || !current.pair) return;
  const seconds = Math.min(MAX_SECONDS, (performance.now() - shownAt) / 1000);
  const body = {
    request: requestId(),
    annotator,
    pair: current.pair.id,
    choice,
    seconds: Math.round(seconds * 1000) / 1000,
  };
  return send("/api/label", body, `saved: ${WORDS[choice]}`);
}

function undo() {
  if (!current || !current.last) return;
  const body = { request: requestId(), annotator, pair: current.last.pair };
  return send("/api/undo", body, "undone: that pair is shown again");
}

function start(name) {
  annotator = name;
  localStorage.setItem(NAME_KEY, name);
  $("who").hidden = true;
  if (document.activeElement) document.activeElement.blur();
  return refresh();
}

function editName() {
  $("who").hidden = false;
  $("annotator").value = annotator;
  $("annotator").focus();
}

function onKey(event) {
  if (event.target.closest && event.target.closest("input, textarea")) return;
  if (event.ctrlKey || event.metaKey || event.altKey || !annotator) return;
  const key = event.key.toLowerCase();
  if (key in KEYS) {
    event.preventDefault();
    if (!busy) choose(KEYS[key]);
  } else if (key === "u" || key === "backspace") {
    event.preventDefault();
    if (!busy) undo();
  } else if (key === "n") {
    event.preventDefault();
    editName();
  }
}

async function main() {
  // Handlers first, before any request: a name entered while /api/config is on its way must not
  // submit the form natively (a page reload that loses it).
  $("who").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("annotator").value.trim();
    if (name) start(name);
  });
  for (const button of document.querySelectorAll("button[data-choice]")) {
    button.addEventListener("click", () => !busy && choose(button.dataset.choice));
  }
  $("undo").addEventListener("click", () => !busy && undo());
  document.addEventListener("keydown", onKey);
  const saved = localStorage.getItem(NAME_KEY);
  if (!saved) $("annotator").focus();
  const config = await call("GET", "/api/config");
  if (!config.ok) {
    say(config.data.error, "error");
    return;
  }
  $("guideline").textContent = config.data.guideline;
  $("total").textContent = config.data.pairs;
  if (config.data.blind) {
    // a blind comparison: no link to the summary, whose win rates would tell who wrote what
    $("summary-link").hidden = true;
    $("finished-summary").hidden = true;
  }
  if (saved && !annotator) await start(saved);
}

main();
