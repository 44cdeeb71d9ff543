"""data.rfc5322_header_checks, in Python: refuse messages that lack a header
RFC 5322 requires (Date and From by default) — Haraka's plugin of that name.

Settings: config/data.rfc5322_header_checks.ini (`required`, `reject`). With
`reject = false` a failing message passes, marked with `X-Header-Check` and
the transaction note `data.rfc5322_header_checks`, for a later plugin.
"""

from waraka_plugin import Plugin, Scope, Settings, cont, deny, info, message, notes

SETTINGS = "data.rfc5322_header_checks.ini"
NOTE = "data.rfc5322_header_checks"


class Hooks(Plugin):
    NAME = "data.rfc5322_header_checks"
    VERSION = "0.1.0"

    def data_post(self):
        settings = Settings.load(SETTINGS)
        checked = int(notes.get(Scope.CONNECTION, NOTE + ".checked") or 0) + 1
        notes.set(Scope.CONNECTION, NOTE + ".checked", str(checked))
        present = {name.lower() for name, _ in message.headers()}
        missing = [name for name in settings.list("required", "Date, From") if name.lower() not in present]
        info(f"message {checked} of this connection: " + (f"missing {', '.join(missing)}" if missing else "pass"))
        if not missing:
            notes.set(Scope.TRANSACTION, NOTE, "pass")
            return cont
        if settings.bool("reject", True):
            return deny(f"Required header '{missing[0]}' missing", code=550, enhanced="5.6.0")
        notes.set(Scope.TRANSACTION, NOTE, "fail: missing " + ", ".join(missing))
        message.add_header("X-Header-Check", "fail (missing " + ", ".join(missing) + ")")
        # Returning nothing is `cont`.
