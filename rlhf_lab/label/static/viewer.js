// The run viewer: the prompts of a run (filtered by the search and the gold range) and, for the chosen
// prompt, its completion at every evaluation step with the step's KL, its gold, the step's proxy mean,
// and the words new since the step before marked. Every text goes in through textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const DATA = JSON.parse($("data").textContent);
let run = DATA.runs[0];
let chosen = 0; // index of the prompt shown, in run.prompts

function number(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function bound(id) {
  const text = $(id).value.trim();
  return text === "" || Number.isNaN(Number(text)) ? null : Number(text);
}

// The filter: a sample is kept when its gold is in [gold ≥, gold ≤] (no bound: every sample).
function inRange(sample) {
  const low = bound("gold-min");
  const high = bound("gold-max");
  if (low === null && high === null) return true;
  if (sample.gold === null || sample.gold === undefined) return false;
  return (low === null || sample.gold >= low) && (high === null || sample.gold <= high);
}

function query() {
  return $("search").value.trim().toLowerCase();
}

// A prompt is listed when one of its samples is in the gold range and, with a search, the prompt or one
// of those samples' completions contains it.
function listed(entry) {
  const kept = entry.samples.filter(inRange);
  const q = query();
  if (!kept.length) return false;
  if (!q) return true;
  return entry.prompt.toLowerCase().includes(q) || kept.some((s) => s.completion.toLowerCase().includes(q));
}

// The words of `text` that are not in the longest common subsequence with `before`, marked.
function marked(before, text) {
  const parts = text.split(/(\s+)/);
  const old = before.split(/\s+/).filter(Boolean);
  const words = parts.filter((p, i) => i % 2 === 0 && p);
  const table = Array.from({ length: words.length + 1 }, () => new Array(old.length + 1).fill(0));
  for (let i = words.length - 1; i >= 0; i--) {
    for (let j = old.length - 1; j >= 0; j--) {
      table[i][j] = words[i] === old[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const kept = new Set();
  for (let i = 0, j = 0; i < words.length && j < old.length; ) {
    if (words[i] === old[j]) {
      kept.add(i);
      i++;
      j++;
    } else if (table[i + 1][j] >= table[i][j + 1]) i++;
    else j++;
  }
  const out = document.createDocumentFragment();
  let w = 0;
  for (const [i, part] of parts.entries()) {
    if (i % 2 === 1 || !part) {
      out.append(part);
      continue;
    }
    if (kept.has(w)) out.append(part);
    else {
      const mark = document.createElement("mark");
      mark.textContent = part;
      out.append(mark);
    }
    w++;
  }
  return out;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function showPrompt(index) {
  chosen = index;
  const entry = run.prompts[index];
  $("detail").hidden = false;
  $("prompt").textContent = entry.prompt;
  const steps = new Map(run.steps.map((s) => [s.step, s]));
  const body = $("steps").tBodies[0];
  body.replaceChildren();
  const q = query();
  let before = null;
  for (const sample of entry.samples) {
    const previous = before;
    before = sample.completion;
    if (!inRange(sample)) continue;
    const logged = steps.get(sample.step) || {};
    const row = document.createElement("tr");
    row.dataset.step = sample.step;
    cell(row, String(sample.step), "num step");
    cell(row, number(logged.kl), "num kl");
    cell(row, number(sample.gold), "num gold");
    cell(row, number(logged.reward), "num reward");
    const text = cell(row, "", "text");
    if (previous === null) text.textContent = sample.completion;
    else if (previous === sample.completion) {
      text.textContent = sample.completion;
      row.classList.add("unchanged");
      const same = document.createElement("span");
      same.className = "same";
      same.textContent = "  (unchanged)";
      text.append(same);
    } else text.append(marked(previous, sample.completion));
    if (q && sample.completion.toLowerCase().includes(q)) row.classList.add("hit");
    body.append(row);
  }
  for (const button of document.querySelectorAll("#prompts button")) {
    button.setAttribute("aria-current", String(Number(button.dataset.index) === index));
  }
}

function showList() {
  const list = $("prompts");
  list.replaceChildren();
  const shown = [];
  run.prompts.forEach((entry, index) => {
    if (!listed(entry)) return;
    shown.push(index);
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.index = index;
    button.textContent = entry.prompt.length > 90 ? entry.prompt.slice(0, 88) + "…" : entry.prompt;
    const n = document.createElement("span");
    n.className = "n";
    n.textContent = ` · ${entry.samples.filter(inRange).length} of ${entry.samples.length}`;
    button.append(n);
    button.addEventListener("click", () => showPrompt(index));
    item.append(button);
    list.append(item);
  });
  $("count").textContent = `${shown.length} of ${run.prompts.length} prompts`;
  $("nothing").hidden = shown.length > 0;
  $("detail").hidden = shown.length === 0;
  if (shown.length) showPrompt(shown.includes(chosen) ? chosen : shown[0]);
}

function chooseRun(index) {
  run = DATA.runs[index];
  chosen = 0;
  const steps = run.steps.map((s) => s.step);
  const gold = run.gold ? `gold: ${run.gold}` : "no gold";
  $("overview").textContent =
    `${run.name}: ${run.prompts.length} prompts × ${steps.length} evaluations ` +
    `(steps ${steps[0]} to ${steps[steps.length - 1]}); ${gold}`;
  showList();
}

function main() {
  const select = $("run");
  DATA.runs.forEach((r, i) => select.append(new Option(r.name, String(i))));
  $("run-box").hidden = DATA.runs.length < 2;
  select.addEventListener("change", () => chooseRun(Number(select.value)));
  for (const id of ["search", "gold-min", "gold-max"]) $(id).addEventListener("input", showList);
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  chooseRun(0);
}

main();
