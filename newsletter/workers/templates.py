"""An issue's rendered variants as stored in the database, so a worker builds every
message without the sources, the templates or the roster."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from newsletter.models import Issue
from newsletter.render import PersonalTemplate, RenderedIssue

FORMAT = 1  # bumped when the stored shape changes; a worker refuses a shape it can't read


def variant_key(article_ids: tuple[str, ...]) -> str:
    """A short stable name for one variant (its articles), stored on each delivery row."""
    return hashlib.sha256("\x1f".join(article_ids).encode()).hexdigest()[:16]


def _part(template: PersonalTemplate) -> dict[str, Any]:
    return {"literals": list(template.literals), "slots": [list(s) for s in template.slots],
            "escape_html": template.escape_html}


def _unpart(data: dict[str, Any]) -> PersonalTemplate:
    return PersonalTemplate(literals=tuple(str(x) for x in data["literals"]),
                            slots=tuple((str(a), str(b)) for a, b in data["slots"]),
                            escape_html=bool(data["escape_html"]))


def dump(rendered: RenderedIssue, now: dt.datetime) -> str:
    """`rendered` (and the Date its messages carry) as JSON text."""
    return json.dumps({
        "format": FORMAT,
        "date": now.astimezone(dt.UTC).isoformat(),
        "issue": json.loads(rendered.issue.model_dump_json()),
        "subject": rendered.subject,
        "preheader": rendered.preheader,
        "html": _part(rendered.html),
        "text": _part(rendered.text),
    }, ensure_ascii=False, separators=(",", ":"))


def load(text: str) -> tuple[RenderedIssue, dt.datetime]:
    """The rendered variant and its Date back from `dump`'s JSON."""
    data = json.loads(text)
    if data.get("format") != FORMAT:
        raise ValueError(f"stored templates have format {data.get('format')!r}; this "
                         f"worker reads {FORMAT}: run the same version everywhere")
    rendered = RenderedIssue(issue=Issue.model_validate(data["issue"]),
                             subject=data["subject"], preheader=data["preheader"],
                             html=_unpart(data["html"]), text=_unpart(data["text"]))
    return rendered, dt.datetime.fromisoformat(data["date"])
