"""A milter for the tests, on Sendmail's libmilter through Debian's
python3-milter (run it with /usr/bin/python3 PORT). It defers the sender
`later@…` (451 4.7.1), refuses the recipient `blocked@…` (550 5.7.1) and a
client that greets as `refused.example` (554 5.7.1, for the whole
connection), and adds `X-Scripted-Milter: NAMES` to each message it
accepts, NAMES being the recipients it was shown in that transaction. At
the message's end it removes the recipient `drop@…` and makes
`rewritten@sender.test` the sender of mail from `rewrite@…`. For mail from
`edit@…` it changes the first `To` to `changed@example.com` and inserts
`X-Inserted: second` as the header's second field; for mail from `body@…`
it sends a body of its own in place of the message's (in two chunks, the
second with a bare LF)."""

import sys

import Milter


class Scripted(Milter.Base):
    def __init__(self):
        self.recipients = []

    def hello(self, name):
        if name == "refused.example":
            self.setreply("554", "5.7.1", "Client refused by the test milter")
            return Milter.REJECT
        return Milter.CONTINUE

    def envfrom(self, sender, *params):
        self.recipients = []
        self.sender = sender.strip("<>")
        if sender.strip("<>").startswith("later@"):
            self.setreply("451", "4.7.1", "Sender deferred by the test milter")
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def envrcpt(self, recipient, *params):
        if recipient.strip("<>").startswith("blocked@"):
            self.setreply("550", "5.7.1", "Recipient blocked by the test milter")
            return Milter.REJECT
        self.recipients.append(recipient.strip("<>"))
        return Milter.CONTINUE

    def eom(self):
        self.addheader("X-Scripted-Milter", "seen " + ",".join(self.recipients))
        for recipient in self.recipients:
            if recipient.startswith("drop@"):
                self.delrcpt(f"<{recipient}>")
        if self.sender.startswith("rewrite@"):
            self.chgfrom("<rewritten@sender.test>")
        if self.sender.startswith("body@"):
            self.replacebody(b"The milter's own body,\r\n")
            self.replacebody(b"in two chunks.\n")
        if self.sender.startswith("edit@"):
            self.chgheader("To", 1, "changed@example.com")
            self.addheader("X-Inserted", "second", 1)
        return Milter.ACCEPT


if __name__ == "__main__":
    Milter.factory = Scripted
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY | Milter.DELRCPT | Milter.CHGFROM)
    Milter.runmilter("scripted", f"inet:{sys.argv[1]}@127.0.0.1", timeout=30)
