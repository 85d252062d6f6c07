"""The labeling page (`rlhf-lab stage=label`): people compare pairs of completions in a browser, and each
decision is appended to a JSONL label file that `labeler=file` reads as it is.

records.py  the label file's events, their replay into standing decisions, and the fold labeler=file reads
human_labels.py  a file of human labels (a table, or this page's label file) as labeler=file reads it
store.py    the append-only file: one fsynced line per event, a lock, recovery of a torn last line
pairs.py    the pairs to label: a collect artifact or a file; ids, order, which side each completion is on
assign.py   who gets which pair (one annotator each, or several on the overlap), and request checks
summary.py  labels, time per label, agreement between annotators and with gold; HTML and Markdown
winrate.py  a blind comparison's win rate of A over B by people, gold and proxy, with 95% intervals
viewer.py   the run viewer: one prompt's completions across a run's evaluations, as one HTML file
server.py   the Starlette app: the page, its JSON API, the access token
serve.py    uvicorn on the configured address, the token printed at start, the summary at stop
static/     the page: plain HTML, CSS and JavaScript, served by the app (no CDN: works offline)

The package sits on the data floor: it depends on nothing above it, and `label/human_labels.py` reads
the label file through `records.fold`. The command line finds a collect artifact for it (cli.py).
"""
