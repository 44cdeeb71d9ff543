"""The `ldap` capability end to end, against a real OpenLDAP slapd started
by the test: `rcpt_to.ldap` accepts the addresses the directory knows,
`auth/ldap` checks passwords by binding as the user, searches go as a
service account over plain LDAP and over ldaps:// (a certificate the
server trusts through SSL_CERT_FILE), and a directory that cannot be
reached never lets anyone in."""

import smtplib
import tempfile
import unittest

from harness import LDAP_BASE, Waraka, auth_plain, make_ca, slapd

LDIF = f"""dn: {LDAP_BASE}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{LDAP_BASE}
objectClass: organizationalUnit
ou: people

dn: ou=services,{LDAP_BASE}
objectClass: organizationalUnit
ou: services

dn: cn=waraka,ou=services,{LDAP_BASE}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: waraka
userPassword: service-pw

dn: uid=alice,ou=people,{LDAP_BASE}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: A
mail: alice@example.com
mailLocalAddress: al@example.com
userPassword: alice-pw

dn: uid=carol,ou=people,{LDAP_BASE}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: carol
cn: Carol
sn: C
mail: carol@example.com
mailRoutingAddress: alice@example.com

dn: cn=team,{LDAP_BASE}
objectClass: nisMailAlias
cn: team
rfc822MailMember: alice@example.com
rfc822MailMember: bob@example.com

dn: uid=bob,ou=people,{LDAP_BASE}
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B
mail: bob@example.com
userPassword: b(o)b*pw
"""

MESSAGE = b"From: a@sender.test\r\nTo: al@example.com\r\nSubject: directory\r\n\r\nbody\r\n"


def ldap_setup(url, aliases=False, starttls=False):
    """Names the directory at `url` `[ldap.main]` (with `starttls`, upgraded
    by StartTLS) and grants it to the LDAP plugins (with `aliases`, to
    `aliases` too, as its source)."""

    def setup(server):
        server.edit("waraka.toml", lambda t: t + f"""
[ldap.main]
url = "{url}"
starttls = {str(starttls).lower()}
bind_dn = "cn=waraka,ou=services,{LDAP_BASE}"
bind_password = "service-pw"
base = "{LDAP_BASE}"
timeout = "3s"

[plugin."rcpt_to.ldap"]
grants = ["ldap:main"]

[plugin."auth/ldap"]
grants = ["ldap:main"]
""")
        server.edit("config/host_list", lambda t: t + "example.com\n")
        if aliases:
            server.edit("waraka.toml", lambda t: t.replace(
                '[plugin.aliases]\ngrants = ["outbound-queue"]', '[plugin.aliases]\ngrants = ["outbound-queue", "ldap:main"]'))
            server.set_settings("aliases.ini", ldap_directory="main")

    return setup




class LdapTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.directory = slapd(LDIF)
        cls.addClassCleanup(cls.directory.stop)
        cls.server = Waraka(["auth/ldap", "rcpt_to.ldap", "queue/maildir"], setup=ldap_setup(cls.directory.url))
        cls.addClassCleanup(cls.server.stop)

    def client(self):
        s = smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30)
        s.ehlo()
        return s

    def auth(self, user, password):
        with self.client() as s:
            code, text = s.docmd("AUTH", auth_plain(user, password))
            return code, text.decode()

    def test_recipients_the_directory_knows_are_accepted(self):
        with self.client() as s:
            s.mail("a@sender.test")
            for known in ("alice@example.com", "AL@Example.com", "alice+news@example.com", "bob@example.com"):
                self.assertEqual(s.rcpt(known)[0], 250, known)
            for unknown in ("nobody@example.com", "*@example.com", "al*@example.com"):
                code, text = s.rcpt(unknown)
                self.assertEqual((code, text.decode()), (550, "5.1.1 Invalid email address"), unknown)
            self.assertEqual(s.rcpt("someone@elsewhere.test")[0], 550, "not local, not relaying")
        self.server.wait_for_log(r"unknown recipient <\*@example\.com>")

    def test_a_known_recipient_gets_the_message(self):
        code, _, stored = self.server.deliver(MESSAGE, recipient="al@example.com")
        self.assertEqual(code, 250)
        self.assertEqual(len(stored), 1)

    def test_users_log_in_with_their_directory_password(self):
        self.assertEqual(self.auth("alice", "alice-pw")[0], 235, "by uid")
        self.assertEqual(self.auth("alice@example.com", "alice-pw")[0], 235, "by mail")
        self.assertEqual(self.auth("bob", "b(o)b*pw")[0], 235, "filter characters in a password are no filter")
        self.server.wait_for_log(r"auth/ldap: alice authenticated as uid=alice,ou=people,dc=example,dc=com")
        for user, password in (("alice", "wrong"), ("nobody", "alice-pw"), ("alice", ""), ("*", "alice-pw"),
                               ("cn=waraka,ou=services", "service-pw")):
            self.assertEqual(self.auth(user, password)[0], 535, (user, password))

    def test_searches_go_on_after_the_directory_restarts(self):
        with self.client() as s:
            s.mail("a@sender.test")
            self.assertEqual(s.rcpt("alice@example.com")[0], 250)
            self.directory.restart()
            self.assertEqual(s.rcpt("bob@example.com")[0], 250, "the shared connection is opened again")

    def test_a_dn_template_binds_without_searching(self):
        settings = (self.server.dir / "config/auth/ldap.ini").read_text()
        self.addCleanup(self.server.edit, "config/auth/ldap.ini", lambda _: settings)
        self.server.set_settings("auth/ldap.ini", dn=f"uid=%l,ou=people,{LDAP_BASE}")
        self.assertEqual(self.auth("alice@example.com", "alice-pw")[0], 235)
        self.assertEqual(self.auth("alice,ou=people", "alice-pw")[0], 535, "a name cannot add to the DN")
        self.server.wait_for_log(r"alice@example\.com authenticated as uid=alice,ou=people")


class LdapAliasesTest(unittest.TestCase):
    """`aliases` with the directory as its source: a routing address and a
    list (nisMailAlias), whose targets `rcpt_to.ldap` then checks."""

    @classmethod
    def setUpClass(cls):
        cls.directory = slapd(LDIF)
        cls.addClassCleanup(cls.directory.stop)

        cls.server = Waraka(["aliases", "rcpt_to.ldap", "queue/maildir"], setup=ldap_setup(cls.directory.url, aliases=True))
        cls.addClassCleanup(cls.server.stop)

    def stored_for(self, recipient):
        code, _, stored = self.server.deliver(MESSAGE, recipient=recipient)
        self.assertEqual(code, 250, recipient)
        return sorted(p.parent.parent.name for p in self.server.maildir() if p.read_bytes() in stored)

    def test_a_routing_address_takes_the_mail(self):
        self.assertEqual(self.stored_for("carol+news@example.com"), ["alice"])
        self.server.wait_for_log(r"carol\+news@example\.com> is an alias of alice\+news@example\.com")

    def test_a_list_reaches_its_members(self):
        settings = (self.server.dir / "config/aliases.ini").read_text()
        self.addCleanup(self.server.edit, "config/aliases.ini", lambda _: settings)
        self.server.set_settings("aliases.ini", ldap_filter="(&(objectClass=nisMailAlias)(cn=%l))",
                                 ldap_attribute="rfc822MailMember")
        self.assertEqual(self.stored_for("team@example.com"), ["alice", "bob"])


class LdapTlsTest(unittest.TestCase):
    def test_searches_and_binds_over_ldaps(self):
        with tempfile.TemporaryDirectory() as ca:
            make_ca(ca, ["localhost"])
            directory = slapd(LDIF, tls=ca)
            self.addCleanup(directory.stop)
            server = Waraka(["auth/ldap", "rcpt_to.ldap", "queue/maildir"], setup=ldap_setup(directory.url),
                            env={"SSL_CERT_FILE": f"{ca}/ca.pem"})
            self.addCleanup(server.stop)
            with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
                s.ehlo()
                self.assertEqual(s.docmd("AUTH", auth_plain("alice", "alice-pw"))[0], 235)
                s.mail("a@sender.test")
                self.assertEqual(s.rcpt("bob@example.com")[0], 250)


    def test_starttls_upgrades_a_plain_connection(self):
        with tempfile.TemporaryDirectory() as ca:
            make_ca(ca, ["localhost"])
            directory = slapd(LDIF, tls=ca, starttls=True)
            self.addCleanup(directory.stop)
            for starttls, expected in ((True, 235), (False, 454)):
                server = Waraka(["auth/ldap", "queue/maildir"], setup=ldap_setup(directory.url, starttls=starttls),
                                env={"SSL_CERT_FILE": f"{ca}/ca.pem"})
                self.addCleanup(server.stop)
                with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
                    s.ehlo()
                    code = s.docmd("AUTH", auth_plain("alice", "alice-pw"))[0]
                self.assertEqual(code, expected, "the directory refuses plain text" if not starttls else "upgraded")


class UnreachableDirectoryTest(unittest.TestCase):
    def test_nobody_gets_in_when_the_directory_is_down(self):
        server = Waraka(["auth/ldap", "rcpt_to.ldap", "queue/maildir"], setup=ldap_setup("ldap://127.0.0.1:1"))
        self.addCleanup(server.stop)
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            code, text = s.docmd("AUTH", auth_plain("alice", "alice-pw"))
            self.assertEqual((code, text.decode()), (454, "4.7.0 Authentication service unavailable"))
            s.mail("a@sender.test")
            code, text = s.rcpt("alice@example.com")
            self.assertEqual((code, text.decode()[:6]), (451, "4.3.0 "))
        server.wait_for_log(r"auth/ldap: checking alice failed")

    def test_aliases_wait_for_the_directory(self):
        server = Waraka(["aliases", "rcpt_to.in_host_list", "queue/maildir"],
                        setup=ldap_setup("ldap://127.0.0.1:1", aliases=True))
        self.addCleanup(server.stop)
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            s.mail("a@sender.test")
            code, text = s.rcpt("carol@example.com")
            self.assertEqual((code, text.decode()), (451, "4.3.0 Recipient aliases temporarily unavailable, try later"))
            self.assertEqual(s.rcpt("carol@elsewhere.test")[0], 550, "not local: not looked up")


if __name__ == "__main__":
    unittest.main()
