"""`geoip` end to end: MaxMind DB files written by the test (a City and an
ASN database, as GeoLite2's) behind the `[geoip]` databases of a real
waraka; clients on loopback addresses of their own that the databases
place in Seattle, Beijing and Amsterdam. The server notes and logs where
each is, writes the header field, refuses a denied country's mail unless
the client logs in, and reads a replaced database at a reload."""

import email
import os
import smtplib
import tempfile
import unittest
from pathlib import Path

from mmdb_writer import MMDBWriter, MmdbF64, MmdbU32
from netaddr import IPSet

from harness import Waraka, flat_file_users

MESSAGE = b"From: a@sender.test\r\nTo: rcpt@example.com\r\nSubject: geoip\r\n\r\nbody\r\n"
SEATTLE, BEIJING, AMSTERDAM = "127.0.0.31", "127.0.0.32", "127.0.0.33"


def place(country, continent, region, city, latitude, longitude):
    return {
        "country": {"iso_code": country},
        "continent": {"code": continent},
        "subdivisions": [{"iso_code": region}],
        "city": {"names": {"en": city}},
        "location": {"latitude": MmdbF64(latitude), "longitude": MmdbF64(longitude)},
    }


def write_city(path, amsterdam_country="NL"):
    """A GeoLite2-City-shaped database, written beside `path` and renamed
    over it as geoipupdate does."""
    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-City")
    writer.insert_network(IPSet([f"{SEATTLE}/32"]), place("US", "NA", "WA", "Seattle", 47.6062, -122.3321))
    writer.insert_network(IPSet([f"{BEIJING}/32"]), place("CN", "AS", "BJ", "Beijing", 39.9042, 116.4074))
    writer.insert_network(IPSet([f"{AMSTERDAM}/32"]),
                          place(amsterdam_country, "EU", "NH", "Amsterdam", 52.3676, 4.9041))
    writer.to_db_file(str(path) + ".new")
    os.replace(str(path) + ".new", path)


def write_asn(path):
    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-ASN")
    writer.insert_network(IPSet(["127.0.0.0/24"]), {
        "autonomous_system_number": MmdbU32(64500),
        "autonomous_system_organization": "Example Net",
    })
    writer.to_db_file(str(path))


class GeoIpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.city = Path(cls.tmp.name) / "city.mmdb"
        asn = Path(cls.tmp.name) / "asn.mmdb"
        write_city(cls.city)
        write_asn(asn)

        def setup(server):
            server.edit("waraka.toml", lambda t: t + f'\n[geoip]\ndatabases = ["{cls.city}", "{asn}"]\n')
            server.set_settings("geoip.ini", check_private="true", deny_countries="CN", too_far="5000")
            server.edit("config/geoip.ini", lambda t: t.replace("# latitude = 52.37", "latitude = 52.37")
                        .replace("# longitude = 4.89", "longitude = 4.89"))
            server.set_settings("karma.ini", check_private="true", tarpit_max="0")
            flat_file_users(server, {"li": "li-pw"})

        cls.server = Waraka(["geoip", "auth/flat_file", "rcpt_to.in_host_list", "karma", "queue/maildir"],
                            setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def client(self, ip):
        return smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30,
                            source_address=(ip, 0))

    def deliver(self, ip, field="X-Waraka-GeoIP"):
        """Sends a message from `ip`: the stored copy's header `field`."""
        before = set(self.server.maildir())
        with self.client(ip) as s:
            self.assertEqual(s.sendmail("a@sender.test", ["rcpt@example.com"], MESSAGE), {})
        (stored,) = [p for p in self.server.maildir() if p not in before]
        return email.message_from_bytes(stored.read_bytes())[field]

    def test_a_client_is_placed_noted_and_its_mail_marked(self):
        header = self.deliver(SEATTLE)
        self.assertRegex(header, r"^US, WA, Seattle, 78\d\dkm$")
        self.server.wait_for_log(rf"geoip: {SEATTLE} is in US, WA, Seattle, 78\d\dkm, AS64500")

    def test_a_denied_country_is_refused_at_mail_unless_the_client_logs_in(self):
        with self.client(BEIJING) as s:
            s.ehlo()
            code, text = s.mail("a@sender.test")
            self.assertEqual((code, text[:5]), (550, b"5.7.1"), text)
            self.assertIn(b"Mail from clients in CN is not accepted here", text)
        with self.client(BEIJING) as s:
            s.ehlo()
            s.login("li", "li-pw")
            self.assertEqual(s.mail("li@example.com")[0], 250, "a user abroad still sends")

    def test_the_notes_reach_later_plugins_and_the_distance_is_scored(self):
        # karma's award reads geoip.too_far: 7,8xx km > too_far = 5000.
        self.assertIn("geoip.too_far", self.deliver(SEATTLE, "X-Waraka-Karma"))
        self.assertNotIn("geoip.too_far", self.deliver(AMSTERDAM, "X-Waraka-Karma") or "")

    def test_a_replaced_database_is_read_at_a_reload(self):
        self.assertRegex(self.deliver(AMSTERDAM), r"^NL, NH, Amsterdam, \d+km$")
        write_city(self.city, amsterdam_country="DE")
        self.server.reload()
        self.assertRegex(self.deliver(AMSTERDAM), r"^DE, NH, Amsterdam, \d+km$")
        self.server.wait_for_log(r"GeoIP database changed: read again")
        write_city(self.city, amsterdam_country="NL")
        self.server.reload()

    def test_only_allowed_countries_send_and_the_distance_comes_from_public_ip(self):
        self.server.set_settings("geoip.ini", deny_countries="", allow_countries="NL, US")
        self.server.edit("config/geoip.ini", lambda t: t.replace("latitude = 52.37", "# latitude = 52.37")
                         .replace("longitude = 4.89", "# longitude = 4.89")
                         .replace("# public_ip = 192.0.2.25", f"public_ip = {AMSTERDAM}"))
        try:
            with self.client(BEIJING) as s:
                s.ehlo()
                code, text = s.mail("a@sender.test")
                self.assertEqual(code, 550, text)
            self.assertRegex(self.deliver(SEATTLE), r"^US, WA, Seattle, 78\d\dkm$",
                             "allowed, 78xx km from this server's own address in Amsterdam")
            self.assertRegex(self.deliver(AMSTERDAM), r"^NL, NH, Amsterdam, 0km$")
        finally:
            self.server.set_settings("geoip.ini", deny_countries="CN", allow_countries="")
            self.server.edit("config/geoip.ini", lambda t: t.replace("# latitude = 52.37", "latitude = 52.37")
                             .replace("# longitude = 4.89", "longitude = 4.89")
                             .replace(f"public_ip = {AMSTERDAM}", "# public_ip = 192.0.2.25"))

    def test_private_clients_are_left_alone_unless_asked(self):
        self.server.set_settings("geoip.ini", check_private="false")
        try:
            self.assertIsNone(self.deliver(SEATTLE))
        finally:
            self.server.set_settings("geoip.ini", check_private="true")


if __name__ == "__main__":
    unittest.main()
