"""Auto-replies, out-of-office notices, vacation messages and challenge-response systems.

None of them says anything about an address: they are ignored, never counted as bounces
(listmonk #1334 counted them and deleted unrelated mail). The caller looks for a delivery
report first: Postfix's DSNs carry `Auto-Submitted: auto-replied` too.
"""

from __future__ import annotations

import re
from email.message import Message

from newsletter.inbound.mailtext import clean, has_header, header

# Subjects that responders use, in the languages readers write in (also after "Re:").
_OOO_SUBJECT = re.compile(
    r"out[ -]of[ -](the[ -])?office|\booo\b|automatic[ -]?reply|auto[ -]?(reply|response|"
    r"responder|antwort|risposta|respuesta|svar)|\bautosvar\b|autoreply|automatische antwort|"
    r"abwesenheit|\babwesend\b|außer haus|nicht im büro|r[ée]ponse automatique|\babsent(e)?\b|"
    r"\babsence\b|respuesta autom[áa]tica|fuera de la oficina|risposta automatica|"
    r"fuori (sede|ufficio)|automatisch antwoord|afwezig|fr[åa]nvarande|frav[æa]r|"
    r"poza biurem|automatick[áa] odpov[ěe]ď|resposta autom[áa]tica|ausente|vacation|"
    r"on holiday|on leave|away from (the )?office|自動返信|自動応答|不在|自动回复|"
    r"автоматический ответ|отсутств",
    re.IGNORECASE)
_CHALLENGE_SUBJECT = re.compile(
    r"please confirm your (e-?mail|message|request)|confirm your (e-?mail|message)|"
    r"verify (that )?you are (a )?(human|not a robot)|verification (is )?required|"
    r"approval required|sender verification|challenge|boxbe|spam ?arrest|"
    r"waiting for (your )?(approval|verification)|please verify your (e-?mail|message)",
    re.IGNORECASE)
_CHALLENGE_HEADERS = ("x-spam-challenge", "x-challenge", "x-boxbe-reason", "x-boxbe-envelope",
                      "x-spamarrest-noauth", "x-spamarrest-verify", "x-cr-challenge")
_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply")
_BULK = ("auto_reply", "junk", "bulk", "list")


def auto_reply_reason(msg: Message, *, generated_ok: bool = False) -> str:
    """Why the mail is an auto-reply or a challenge (a short phrase), or "" if it is not.

    `generated_ok` lets `Auto-Submitted: auto-generated` through: RFC 3834's mark of a
    mail that a process made on its own, not in answer to one, such as the unsubscribe
    mail an unsubscribe button sends; every other sign still counts.
    """
    submitted = header(msg, "auto-submitted").split(";")[0].strip().lower()
    subject = header(msg, "subject")[:998]
    precedence = header(msg, "precedence").strip().lower()
    if submitted and submitted != "no" and not (generated_ok and submitted == "auto-generated"):
        return f"Auto-Submitted: {clean(submitted, 40)}"
    for name in _AUTO_HEADERS:
        value = header(msg, name).strip().lower()
        if has_header(msg, name) and value not in ("no", "false", "0"):
            return f"{name.title()} header"
    if precedence == "auto_reply":
        return "Precedence: auto_reply"
    for name in _CHALLENGE_HEADERS:
        if has_header(msg, name):
            return f"challenge ({name.title()} header)"
    if _CHALLENGE_SUBJECT.search(subject) or "boxbe" in header(msg, "from").lower():
        return "challenge-response"
    if _OOO_SUBJECT.search(subject):
        if precedence in _BULK:
            return f"Precedence: {precedence}, out-of-office subject"
        return "out-of-office subject"
    return ""
