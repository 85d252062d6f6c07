"""Who labels which pair, and whether a request may be applied.

Each annotator is handed the first pair of the labeling order that they have not decided and that
still needs someone: a pair needs one annotator, or `overlap_annotators` on the overlapped share. A
pair handed out is *claimed* by its annotator until they decide it or `claim_seconds` pass, and counts
as taken meanwhile, so annotators working at once get different pairs. A tie counts as a judgment; a
skip does not (the pair goes to someone else). An undo gives the pair back to the same annotator.

Claims live in memory only: after a restart the label file alone says who decided what, and each
annotator resumes at their first undecided pair. A check that fails raises `Refused` with an HTTP
status and a message, before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rlhf_lab.label.pairs import Pair, ordered, overlapped
from rlhf_lab.label.records import Decision, Ledger


class Refused(Exception):
    """A request that cannot be applied: `status` (4xx) and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Claim:
    pair: str
    since: float


class Desk:
    """The pairs, the ledger of decisions, and the claims of the annotators at work."""

    def __init__(
        self,
        pairs: list[Pair],
        ledger: Ledger,
        *,
        seed: int,
        overlap: float = 0.0,
        overlap_annotators: int = 2,
        claim_seconds: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.order = ordered(pairs, seed)
        self.pairs = {p.id: p for p in self.order}
        self.needed = {p.id: overlap_annotators if overlapped(p, seed, overlap) else 1 for p in self.order}
        self.ledger = ledger
        self.claim_seconds = claim_seconds
        self.clock = clock
        self.claims: dict[str, Claim] = {}  # annotator -> the pair handed to them
        self.judged: dict[str, set[str]] = {}  # pair -> annotators with a standing tie, a or b
        for decision in ledger.decisions():
            self._count(decision, +1)

    # ---------------------------------------------------------------------------------- handing out
    def next_for(self, annotator: str) -> Pair | None:
        """The pair `annotator` should see now (the one they hold, else a new one), or None when no
        pair needs them."""
        now = self.clock()
        held = self.claims.get(annotator)
        if held and (annotator, held.pair) not in self.ledger.standing and self._free(held.pair, annotator):
            held.since = now
            return self.pairs[held.pair]
        taken = self._taken(now, annotator)
        for pair in self.order:
            if (annotator, pair.id) not in self.ledger.standing and self._free(pair.id, annotator, taken):
                self.claims[annotator] = Claim(pair.id, now)
                return pair
        self.claims.pop(annotator, None)
        return None

    def _taken(self, now: float, but: str) -> dict[str, int]:
        """pair -> how many other annotators hold a live claim on it."""
        taken: dict[str, int] = {}
        for who, claim in self.claims.items():
            if who != but and now - claim.since < self.claim_seconds:
                taken[claim.pair] = taken.get(claim.pair, 0) + 1
        return taken

    def _free(self, pair: str, annotator: str, taken: dict[str, int] | None = None) -> bool:
        """Whether `pair` still needs an annotator besides `annotator` (decisions and others' claims)."""
        if taken is None:
            taken = self._taken(self.clock(), annotator)
        others = len(self.judged.get(pair, set()) - {annotator}) + taken.get(pair, 0)
        return others < self.needed[pair]

    # ---------------------------------------------------------------------------------- checks
    def check_label(self, annotator: str, pair: str, choice: str, request: str) -> bool:
        """Whether the label is a retry of one already applied (True: nothing to write); raises Refused
        when it cannot be applied."""
        if pair not in self.pairs:
            raise Refused(404, f"unknown pair id {pair!r}")
        if self._replayed(request, ("label", annotator, pair, choice)):
            return True
        if (annotator, pair) in self.ledger.standing:
            raise Refused(409, f"annotator {annotator!r} already labeled pair {pair}; undo it first")
        if not self._free(pair, annotator):
            raise Refused(409, f"pair {pair} is with another annotator now; yours is the next one shown")
        return False

    def check_undo(self, annotator: str, pair: str, request: str) -> bool:
        """Whether the undo is a retry of one already applied; raises Refused unless `pair` holds the
        annotator's latest standing decision."""
        if pair not in self.pairs and not any(p == pair for _, p in self.ledger.standing):
            raise Refused(404, f"unknown pair id {pair!r}")
        if self._replayed(request, ("undo", annotator, pair, "")):
            return True
        last = self.ledger.last(annotator)
        if last is None:
            raise Refused(409, f"annotator {annotator!r} has no label to undo")
        if last.pair != pair:
            raise Refused(409, f"the last label of {annotator!r} is on pair {last.pair}, not {pair}")
        return False

    def _replayed(self, request: str, key: tuple[str, str, str, str]) -> bool:
        seen = self.ledger.requests.get(request)
        if seen is None:
            return False
        if seen != key:
            raise Refused(409, f"request id {request!r} was already used for another request")
        return True

    # ---------------------------------------------------------------------------------- applying
    def record_label(self, decision: Decision) -> None:
        """Apply a label already written to the file."""
        self.ledger.add(decision)
        self._count(decision, +1)
        held = self.claims.get(decision.annotator)
        if held and held.pair == decision.pair:
            del self.claims[decision.annotator]

    def record_undo(self, annotator: str, pair: str, request: str) -> None:
        """Apply an undo already written to the file; the pair goes back to the annotator."""
        self._count(self.ledger.undo(request, annotator, pair), -1)
        if pair in self.pairs:
            self.claims[annotator] = Claim(pair, self.clock())

    def _count(self, decision: Decision, sign: int) -> None:
        if decision.choice == "skip":
            return
        judged = self.judged.setdefault(decision.pair, set())
        if sign > 0:
            judged.add(decision.annotator)
        else:
            judged.discard(decision.annotator)

    # ---------------------------------------------------------------------------------- progress
    def progress(self, annotator: str) -> dict[str, int]:
        """The page's counters: this annotator's labels and skips, pairs done (judged by as many
        annotators as they need) of the total."""
        mine = [d for (who, _), d in self.ledger.standing.items() if who == annotator]
        done = sum(len(self.judged.get(p, ())) >= n for p, n in self.needed.items())
        return {
            "labeled": sum(d.choice != "skip" for d in mine),
            "skipped": sum(d.choice == "skip" for d in mine),
            "done": done,
            "total": len(self.pairs),
        }
