"""Observability: the structured JSON log (--log-format json, or
WARAKA_LOG_FORMAT=json) and the Prometheus metrics of transactions, replies,
connections and plugin loads, read from a live server."""

import json
import os
import smtplib
import unittest

from harness import Waraka, free_port, prometheus

MESSAGE = b"Subject: observed\r\n\r\nhello\r\n"


class ObservabilityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics_port = free_port()

        def metrics(server):
            server.enable_metrics(cls.metrics_port)

        os.environ["WARAKA_LOG_FORMAT"] = "json"
        try:
            cls.server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=metrics)
        finally:
            del os.environ["WARAKA_LOG_FORMAT"]
        with smtplib.SMTP("127.0.0.1", cls.server.port, timeout=30) as s:
            s.ehlo("client.test")
            s.sendmail("a@sender.test", ["rcpt@example.com"], MESSAGE)  # accepted
            s.mail("a@sender.test")
            s.rcpt("rcpt@example.com")
            s.rset()  # abandoned
            s.mail("a@sender.test")
            s.rcpt("rcpt@example.com")
            code, _ = s.data(b"Subject: nul\r\n\r\nnul\x00\r\n")  # refused after DATA
            assert code == 554, code
            assert s.rcpt("rcpt@nowhere.test")[0] == 503  # no MAIL: a 5xx outside a transaction
        cls.server.wait_for_log(r'"message":"disconnected"')

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_every_log_line_is_a_json_object_with_its_spans(self):
        records = [json.loads(line) for line in self.server.log if line.strip()]
        self.assertTrue(all({"timestamp", "level", "fields", "target"} <= r.keys() for r in records))
        accepted = next(r for r in records if r["fields"]["message"] == "message accepted")
        conn, tx = accepted["spans"]
        self.assertEqual((conn["name"], tx["name"]), ("conn", "tx"))
        self.assertTrue(tx["id"].startswith(conn["id"] + "."))
        self.assertEqual(accepted["fields"]["queue_id"], tx["id"])
        self.assertEqual(accepted["fields"]["plugin"], "queue/maildir")
        loaded = [r["fields"]["plugin"] for r in records if r["fields"]["message"] == "plugin loaded"]
        self.assertEqual(loaded, ["rcpt_to.in_host_list", "queue/maildir"])

    def test_metrics_count_transactions_replies_connections_and_loads(self):
        m = prometheus(self.metrics_port)
        for outcome in ("accepted", "abandoned", "refused"):
            self.assertEqual(m[f'waraka_transactions_total{{outcome="{outcome}"}}'], 1, outcome)
        # 220, 250 EHLO, MAIL/RCPT/354/250, 250 MAIL/RCPT/RSET, MAIL/RCPT/354, 221...
        self.assertGreaterEqual(m['waraka_replies_total{class="2xx"}'], 10)
        self.assertEqual(m['waraka_replies_total{class="3xx"}'], 2)
        self.assertEqual(m['waraka_replies_total{class="5xx"}'], 2)
        self.assertEqual(m["waraka_connections_total"], 1)
        self.assertEqual(m['waraka_plugin_loads_total{plugin="queue/maildir"}'], 1)


if __name__ == "__main__":
    unittest.main()
