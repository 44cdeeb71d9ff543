"""The Waraka plugin SDK for Python, for components built with componentize-py.

A plugin is a module (``app.py``) with a class named ``Hooks`` that derives
from :class:`Plugin` and defines the hooks it wants as methods; the hooks it
does not define answer ``cont`` and are never called, because ``describe``
lists only the methods the class overrides::

    from waraka_plugin import Plugin, cont, deny, message

    class Hooks(Plugin):
        NAME = "data.no_subject"

        def data_post(self):
            if not message.header("Subject"):
                return deny("A Subject is required", code=550, enhanced="5.6.0")
            return cont

Build it with ``waraka plugin build`` (componentize-py against the
``outbound-plugin`` world, with ``build/waraka_main.py`` exporting ``Hooks`` and
its outbound hooks), or by hand for the inbound hooks alone with
``componentize-py -d WIT -w plugin componentize app -o NAME.wasm``. The outbound
hooks (``send_email``, ``get_mx``, ``deferred``, ``bounce``, ``delivered``) are
methods of the same class. The host imports are re-exported
here as modules: ``log``, ``notes``, ``config``, ``session``, ``envelope``,
``message``, ``mime``, and the capabilities a plugin must be granted in
``waraka.toml``: ``kv``, ``dns``, ``blobstore``, ``files``, ``sql``, ``forward``,
``authentication``, ``outbound_queue``, ``dkim``, ``antivirus``, ``spamfilter``,
``sasl``, ``milter``, ``ldap``, ``http``, ``geoip``, ``imap``, ``p0f``.
A host call that fails raises ``componentize_py_types.Err`` with a
``types.Error_*`` value (``Error_NotGranted``, ``Error_Timeout``, ...).
"""

import functools

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import (  # noqa: F401  (re-exported for plugins)
    antivirus,
    authentication,
    blobstore,
    config,
    dkim,
    dns,
    envelope,
    files,
    forward,
    geoip,
    http,
    imap,
    kv,
    ldap,
    message,
    milter,
    mime,
    notes,
    outbound_queue,
    p0f,
    sasl,
    session,
    spamfilter,
    sql,
    types,
)
from wit_world.imports import log as _log
from wit_world.imports.types import Address, Scope  # noqa: F401

try:
    from wit_world.exports import outbound_hooks as _outbound
    from wit_world.exports.outbound_hooks import NextHop  # noqa: F401  (re-exported for plugins)
except ImportError:  # built by hand against the `plugin` world: no outbound hooks
    _outbound = NextHop = None

__all__ = [
    "Plugin", "Settings", "Scope", "Address", "Err", "cont", "ok", "deny", "denysoft", "deny_disconnect",
    "denysoft_disconnect", "disconnect", "deliver", "delay", "drop", "NextHop", "trace", "debug", "info", "warn", "error", "authentication",
    "blobstore", "config", "dns", "envelope", "files", "forward", "kv", "message", "notes", "session", "sql", "types",
    "mime", "outbound_queue", "dkim", "antivirus", "spamfilter", "sasl", "milter", "ldap", "http", "geoip", "imap",
    "p0f",
]

cont = types.Verdict_Cont()
"""Pass to the next plugin in the chain."""


def _reply(text, code, enhanced):
    if text is None and not code and enhanced is None:
        return None
    lines = [] if text is None else ([text] if isinstance(text, str) else list(text))
    return types.Reply(code, enhanced, lines)


def ok(text=None, code=0, enhanced=None):
    """Accept and end the chain; ``text`` (a line or a list of lines), ``code``
    and ``enhanced`` override the hook's default reply."""
    return types.Verdict_Ok(_reply(text, code, enhanced))


def deny(text=None, code=0, enhanced=None):
    """Reject permanently (5xx)."""
    return types.Verdict_Deny(_reply(text, code, enhanced))


def denysoft(text=None, code=0, enhanced=None):
    """Reject temporarily (4xx): the client tries again later."""
    return types.Verdict_Denysoft(_reply(text, code, enhanced))


def deny_disconnect(text=None, code=0, enhanced=None):
    """Reject permanently and close the connection."""
    return types.Verdict_DenyDisconnect(_reply(text, code, enhanced))


def denysoft_disconnect(text=None, code=0, enhanced=None):
    """Reject temporarily and close the connection."""
    return types.Verdict_DenysoftDisconnect(_reply(text, code, enhanced))


def disconnect(text=None, code=0, enhanced=None):
    """Close the connection (421 by default)."""
    return types.Verdict_Disconnect(_reply(text, code, enhanced))


def deliver():
    """``send_email``: deliver now (what the hook answers when it returns nothing)."""
    return _outbound.SendDecision_Deliver()


def delay(seconds):
    """``send_email``: wait ``seconds`` first; not counted as a failed attempt."""
    return _outbound.SendDecision_Delay(seconds)


def drop():
    """``send_email``: the plugin took care of the mail; the entry goes
    without delivery and without a DSN."""
    return _outbound.SendDecision_Drop()


def trace(text):
    """Logs at trace level, tagged with the plugin and the session."""
    _log.log(_log.Level.TRACE, str(text))


def debug(text):
    """Logs at debug level."""
    _log.log(_log.Level.DEBUG, str(text))


def info(text):
    """Logs at info level."""
    _log.log(_log.Level.INFO, str(text))


def warn(text):
    """Logs at warn level."""
    _log.log(_log.Level.WARN, str(text))


def error(text):
    """Logs at error level."""
    _log.log(_log.Level.ERROR, str(text))


class Settings:
    """The ``key = value`` lines of one file in the instance's ``config/``
    (Haraka-style INI lines; ``[sections]`` and comment lines are ignored),
    read once: load it at the start of a hook and ask it as often as needed."""

    def __init__(self, pairs):
        self.pairs = pairs

    @classmethod
    def load(cls, name):
        """The settings of ``config/NAME``; empty when it is missing or unreadable."""
        try:
            lines = config.lines(name)
        except Err:
            lines = []
        pairs = []
        for line in lines:
            key, sep, value = line.partition("=")
            if sep:
                pairs.append((key.strip(), value.strip()))
        return cls(pairs)

    def get(self, key, default=None):
        """The value of ``key`` (the first one), ``default`` when missing."""
        return next((v for k, v in self.pairs if k == key), default)

    def bool(self, key, default):
        """A yes/no setting (true/yes/on/1 or false/no/off/0); ``default`` otherwise."""
        value = (self.get(key) or "").lower()
        if value in ("true", "yes", "on", "1"):
            return True
        if value in ("false", "no", "off", "0"):
            return False
        return default

    def list(self, key, default=""):
        """A comma-separated setting as a list of trimmed, non-empty items."""
        return [item.strip() for item in self.get(key, default).split(",") if item.strip()]


# Python method name -> WIT hook name, for every hook, inbound and outbound.
HOOKS = {
    "connect": "connect", "helo": "helo", "ehlo": "ehlo", "capabilities": "capabilities", "auth": "auth",
    "unrecognized_command": "unrecognized-command", "mail": "mail", "rcpt": "rcpt", "rcpt_ok": "rcpt-ok",
    "data": "data", "data_post": "data-post", "max_data_exceeded": "max-data-exceeded", "queue": "queue",
    "queue_outbound": "queue-outbound", "queue_ok": "queue-ok", "reset_transaction": "reset-transaction",
    "disconnect": "disconnect", "deny": "deny",
    "send_email": "send-email", "get_mx": "get-mx", "deferred": "deferred", "bounce": "bounce",
    "delivered": "delivered",
}


def _answering_default(method, default):
    """``method``, answering what ``default`` does when it returns None."""

    @functools.wraps(method)
    def hook(self, *args):
        answer = method(self, *args)
        return default(self, *args) if answer is None else answer

    return hook


class Plugin(exports.Hooks):
    """The base of a plugin's ``Hooks`` class. Set ``NAME`` (and ``VERSION``)
    and define the hook methods the plugin needs; ``describe`` lists exactly
    those, so the host calls nothing else. A hook that returns None answers
    the default (``cont``, and for the outbound hooks ``deliver()``, no next
    hops, the schedule's wait, the DSN)."""

    NAME = "unnamed"
    VERSION = "0.1.0"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for method in HOOKS:
            if method in cls.__dict__:
                setattr(cls, method, _answering_default(cls.__dict__[method], getattr(Plugin, method)))

    def describe(self):
        mine = [wit for method, wit in HOOKS.items() if getattr(type(self), method) is not getattr(Plugin, method)]
        return types.PluginInfo(self.NAME, self.VERSION, mine)

    def connect(self):
        return cont

    def helo(self, host):
        return cont

    def ehlo(self, host):
        return cont

    def capabilities(self):
        return []

    def auth(self, attempt):
        return cont

    def unrecognized_command(self, verb, args):
        return cont

    def mail(self, sender):
        return cont

    def rcpt(self, recipient):
        return cont

    def rcpt_ok(self, recipient):
        return cont

    def data(self):
        return cont

    def data_post(self):
        return cont

    def max_data_exceeded(self):
        return cont

    def queue(self):
        return cont

    def queue_outbound(self):
        return cont

    def queue_ok(self, queue_id):
        return None

    def reset_transaction(self):
        return None

    def disconnect(self):
        return None

    def deny(self, denial):
        return cont

    # The outbound hooks (docs/hooks.md, "Outbound hooks"), asked by the
    # delivery worker without a session. ``delivery`` has ``id``, ``domain``,
    # ``sender``, ``recipients``, ``attempts`` and ``arrival_ms``; a failure
    # has ``recipient``, ``status`` and ``diagnostic``.

    def send_email(self, delivery):
        """``deliver()``, ``delay(seconds)`` or ``drop()``."""
        return deliver()

    def get_mx(self, delivery):
        """A list of ``NextHop(host, port)`` to deliver to; None leaves it to
        routes and MX lookup."""
        return None

    def deferred(self, delivery, failures, retry_in):
        """Seconds to wait instead of ``retry_in``; None keeps the schedule's."""
        return None

    def bounce(self, delivery, failures):
        """True suppresses the DSN to the sender."""
        return False

    def delivered(self, delivery, recipients, host, reply):
        """``host`` accepted ``recipients`` with ``reply``."""
        return None

