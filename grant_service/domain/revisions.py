"""How far ahead a revision the catalog pushes may go: a bound in total, per window of time.

The catalog numbers the revisions of a subscription (and of a credit currency) 1, 2, 3 ... and a gap
only comes from revisions it superseded or parked. A revision far ahead is not the catalog's: applied,
it would make the catalog's next real revisions STALE. The bound holds however the steps are split
across the items of a batch and across calls: within a window (`--max-revision-step-window-s`, a day
by default) the revision may rise by at most `max_step` (`--max-revision-step`) above the revision
held when the window opened. A window opens at the first rise after the previous one ended.
docs/security.md ("Revisions") says what this does and does not protect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from credit_common.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True, slots=True)
class RevisionWindow:
    """When the current window opened (None: never) and the revision held at that moment."""

    start: datetime | None = None
    base: int = 0


NO_WINDOW = RevisionWindow()  # a subscription or currency whose revision has never risen


def advance(
    kind: str,
    key: str,
    held: int,
    revision: int,
    window: RevisionWindow,
    now: datetime,
    max_step: int,
    length: timedelta,
) -> RevisionWindow:
    """The window after `key` (held at `held`, 0 if new) moves to `revision` at `now`; InvalidArgument
    REVISION_TOO_FAR_AHEAD if that is more than `max_step` above the window's base. A revision that is
    not ahead (already applied, stale) changes nothing."""
    if revision <= held:
        return window
    if window.start is None or now >= window.start + length:
        window = RevisionWindow(now, held)
    if revision - window.base <= max_step:
        return window
    limit = window.base + max_step
    assert window.start is not None
    reopens = window.start + length
    raise InvalidArgument(
        f"revision {revision} of {kind} {key!r} is more than {max_step} ahead of revision {window.base}, held when "
        f"the current window opened (now {held}); at most {limit} until {reopens.isoformat()}",
        reason="REVISION_TOO_FAR_AHEAD",
        metadata={
            "current_revision": str(held),
            "window_base_revision": str(window.base),
            "max_revision_step": str(max_step),
            "window_reopens_at": reopens.isoformat(),
        },
        violations=[FieldViolation("revision", f"must be at most {limit}", "REVISION_TOO_FAR_AHEAD")],
    )
