"""attachment end to end: smtplib sends MIME messages built by Python's
email package, with zip and tar archives built by its zipfile and tarfile
modules, disc images made by genisoimage, 7z archives made by 7-Zip and RAR
archives made by RAR (tests/archives), to a real waraka; the host parses
them (the mime import) and the plugin decides."""

import email
import email.policy
import io
import subprocess
import tarfile
import tempfile
import unittest
import zipfile
from pathlib import Path
from email.message import EmailMessage

from harness import ROOT, Waraka


def zip_of(entries):
    """A zip archive of {name: bytes}."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return out.getvalue()


def tree_of(tmp, entries):
    """A directory `root` in `tmp` holding {path: bytes}."""
    root = Path(tmp) / "root"
    for name, content in entries.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def iso_of(entries, joliet=True):
    """An ISO 9660 image of {path: bytes} made by genisoimage, with Joliet
    names (as Windows tools write them) or only the primary volume's."""
    with tempfile.TemporaryDirectory() as tmp:
        root = tree_of(tmp, entries)
        image = Path(tmp) / "out.iso"
        subprocess.run(["genisoimage", "-quiet", *(["-J"] if joliet else []), "-o", str(image), str(root)],
                       check=True, capture_output=True)
        return image.read_bytes()


def seven_z_of(entries, *options):
    """A 7z archive of {path: bytes} made by 7-Zip (`7zz`), with its
    command-line `options` (`-psecret`, `-mhe=on`)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = tree_of(tmp, entries)
        out = Path(tmp) / "out.7z"
        subprocess.run(["7zz", "a", "-t7z", *options, str(out), "."], cwd=root, check=True, capture_output=True)
        return out.read_bytes()


def flagged_encrypted(archive):
    """`archive` with every entry flagged as encrypted, as a password-protected
    archive says of its entries (zipfile cannot write one): bit 0 of the
    flags of each local and central directory header."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at != -1:
            data[at + offset] |= 0x01
            at = data.find(signature, at + 4)
    return bytes(data)


def with_attachments(subject, *attachments):
    """A message with a text body and (filename, maintype/subtype, bytes) attachments."""
    msg = EmailMessage()
    msg["From"] = "a@sender.test"
    msg["To"] = "rcpt@example.com"
    msg["Subject"] = subject
    msg.set_content("See attached.\n")
    for filename, content_type, content in attachments:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes().replace(b"\n", b"\r\n")


class AttachmentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["attachment", "rcpt_to.in_host_list", "queue/maildir"])
        cls.addClassCleanup(cls.server.stop)

    def send(self, raw):
        return self.server.deliver(raw)[:2]

    def assertRefused(self, raw, text):
        self.assertEqual(self.send(raw), (550, f"5.7.1 {text}"))

    def test_harmless_attachments_pass(self):
        code, _, files = self.server.deliver(with_attachments(
            "fine", ("report.pdf", "application/pdf", b"%PDF-1.4 ..."),
            ("photos.zip", "application/zip", zip_of({"a.jpg": b"\xff\xd8", "docs/b.txt": b"b"}))))
        self.assertEqual(code, 250)
        self.assertEqual(len(files), 1)

    def test_a_refused_extension_is_refused_however_the_name_is_written(self):
        self.assertRefused(with_attachments("exe", ("Setup.EXE", "application/octet-stream", b"MZ")),
                           "Message contains unacceptable attachment (Setup.EXE)")
        # Python writes a non-ASCII name as RFC 2231 (filename*=utf-8''…); the host decodes it.
        self.assertRefused(with_attachments("2231", ("Rechnung-März.pdf.scr", "application/pdf", b"MZ")),
                           "Message contains unacceptable attachment (Rechnung-März.pdf.scr)")
        code, text = self.send(with_attachments("dots", ("invoice.exe. ", "application/pdf", b"MZ")))
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith("5.7.1 Message contains unacceptable attachment (invoice.exe."), text)
        self.server.wait_for_log(r'Message contains unacceptable attachment \(Setup\.EXE\) plugin="attachment"')

    def test_zips_are_opened_by_content_and_nested_ones_too(self):
        inner = zip_of({"notes.txt": b"n", "run.vbs": b"WScript.Echo 1"})
        outer = zip_of({"readme.txt": b"r", "more.zip": inner})
        self.assertRefused(with_attachments("nested", ("data.bin", "application/octet-stream", outer)),
                           "Message contains unacceptable attachment (data.bin: more.zip/run.vbs)")

    def test_tars_plain_and_gzipped_are_opened_and_the_zips_in_them(self):
        def tar_of(entries, mode):
            out = io.BytesIO()
            with tarfile.open(fileobj=out, mode=mode) as archive:
                for name, content in entries.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    archive.addfile(info, io.BytesIO(content))
            return out.getvalue()

        plain = tar_of({"readme.txt": b"r", "bin/setup.exe": b"MZ"}, "w")
        self.assertRefused(with_attachments("tar", ("backup.dat", "application/octet-stream", plain)),
                           "Message contains unacceptable attachment (backup.dat: bin/setup.exe)")
        nested = tar_of({"readme.txt": b"r", "more.zip": zip_of({"run.vbs": b"WScript.Echo 1"})}, "w:gz")
        self.assertRefused(with_attachments("tgz", ("logs.tgz", "application/gzip", nested)),
                           "Message contains unacceptable attachment (logs.tgz: more.zip/run.vbs)")
        harmless = tar_of({"readme.txt": b"r", "photo.jpg": b"\xff\xd8"}, "w:gz")
        code, _, stored = self.server.deliver(with_attachments("fine", ("photos.tar.gz", "application/gzip", harmless)))
        self.assertEqual((code, len(stored)), (250, 1))

    def test_disc_images_are_opened_with_their_joliet_names_and_the_zips_in_them(self):
        lure = iso_of({"Invoice 2026.lnk": b"L", "readme.txt": b"r"})
        self.assertRefused(with_attachments("iso", ("invoice.iso", "application/x-iso9660-image", lure)),
                           "Message contains unacceptable attachment (invoice.iso: Invoice 2026.lnk)")
        # A .img that is an ISO 9660 image without Joliet: the primary volume's names.
        plain = iso_of({"readme.txt": b"r", "bin/setup.exe": b"MZ"}, joliet=False)
        self.assertRefused(with_attachments("img", ("disk.img", "application/octet-stream", plain)),
                           "Message contains unacceptable attachment (disk.img: BIN/SETUP.EXE)")
        nested = iso_of({"docs/more.zip": zip_of({"run.vbs": b"WScript.Echo 1"})})
        self.assertRefused(with_attachments("iso zip", ("docs.iso", "application/x-iso9660-image", nested)),
                           "Message contains unacceptable attachment (docs.iso: docs/more.zip/run.vbs)")
        harmless = iso_of({"photos/a.jpg": b"\xff\xd8", "photos/b.jpg": b"\xff\xd8"})
        code, _, stored = self.server.deliver(with_attachments("photos", ("photos.iso", "application/x-iso9660-image",
                                                                          harmless)))
        self.assertEqual((code, len(stored)), (250, 1))
        # An image cut short cannot be listed whole.
        self.assertRefused(with_attachments("cut", ("cut.iso", "application/x-iso9660-image", lure[:40000])),
                           "Message contains an archive that cannot be inspected (cut.iso)")

    def test_7z_archives_are_listed_from_their_header(self):
        """Archives made by 7-Zip itself (Debian's `7zz`): names are listed,
        an encrypted header hides them, and a zip inside is not opened."""
        lure = seven_z_of({"readme.txt": b"r", "bin/setup.exe": b"MZ"})
        self.assertRefused(with_attachments("7z", ("backup.dat", "application/octet-stream", lure)),
                           "Message contains unacceptable attachment (backup.dat: bin/setup.exe)")
        hidden = seven_z_of({"readme.txt": b"r"}, "-psecret", "-mhe=on")
        self.assertRefused(with_attachments("7z hidden", ("docs.7z", "application/x-7z-compressed", hidden)),
                           "Message contains an encrypted archive (docs.7z)")
        inner = seven_z_of({"more.zip": zip_of({"run.vbs": b"WScript.Echo 1"})})
        self.assertRefused(with_attachments("7z zip", ("more.7z", "application/x-7z-compressed", inner)),
                           "Message contains an archive that cannot be inspected (more.7z)")
        harmless = seven_z_of({"photos/a.jpg": b"\xff\xd8", "photos/b.jpg": b"\xff\xd8"})
        code, _, stored = self.server.deliver(with_attachments("7z photos", ("photos.7z", "application/x-7z-compressed",
                                                                             harmless)))
        self.assertEqual((code, len(stored)), (250, 1))

    def test_rar_archives_are_listed_from_their_headers(self):
        """Archives made by RAR itself (tests/archives): names are listed and
        refused by the archive rules, encrypted files or headers are
        encrypted archives, and one volume of several cannot be inspected."""
        def rar(name):
            return (ROOT / "tests" / "archives" / name).read_bytes()

        files = with_attachments("rar", ("data.rar", "application/vnd.rar", rar("rar5-files.rar")))
        code, _, stored = self.server.deliver(files)
        self.assertEqual((code, len(stored)), (250, 1))
        rule = "^random_4k\\.bin$\n"
        self.server.edit("config/attachment.archive.filename.regex", lambda t: t + rule)
        try:
            self.assertRefused(files, "Message contains unacceptable attachment (data.rar: random_4k.bin)")
        finally:
            self.server.edit("config/attachment.archive.filename.regex", lambda t: t.replace(rule, ""))
        for name in ["rar4-encrypted-files.rar", "rar4-encrypted-headers.rar", "rar5-encrypted-headers.rar"]:
            self.assertRefused(with_attachments(name, (name, "application/x-rar-compressed", rar(name))),
                               f"Message contains an encrypted archive ({name})")
        self.assertRefused(with_attachments("volume", ("part1.rar", "application/vnd.rar", rar("rar5-volume.part1.rar"))),
                           "Message contains an archive that cannot be inspected (part1.rar)")

    def test_encrypted_and_uninspectable_archives_are_refused_unless_accepted(self):
        secret = with_attachments("secret", ("secret.zip", "application/zip",
                                             flagged_encrypted(zip_of({"doc.txt": b"x"}))))
        self.assertRefused(secret, "Message contains an encrypted archive (secret.zip)")
        broken = with_attachments("broken", ("broken.zip", "application/zip", b"PK\x03\x04" + b"\x00" * 40))
        self.assertRefused(broken, "Message contains an archive that cannot be inspected (broken.zip)")
        deep = zip_of({"readme.txt": b"r"})
        for level in range(6):
            deep = zip_of({f"level{level}.zip": deep})
        self.assertRefused(with_attachments("deep", ("deep.zip", "application/zip", deep)),
                           "Message contains an archive that cannot be inspected (deep.zip)")
        self.server.set_settings("attachment.ini", encrypted_archives="accept", uninspectable_archives="accept")
        try:
            self.assertEqual(self.send(secret)[0], 250)
            self.assertEqual(self.send(broken)[0], 250)
        finally:
            self.server.set_settings("attachment.ini", encrypted_archives="reject", uninspectable_archives="reject")

    def test_patterns_for_names_types_and_archive_names_apply_without_a_restart(self):
        html = with_attachments("html", ("Invoice_2026.html", "text/html", b"<script></script>"))
        typed = with_attachments("typed", ("tool.bin", "application/x-msdownload", b"MZ"))
        script = with_attachments("script", ("pack.zip", "application/zip", zip_of({"lib/app.JS": b"1"})))
        for raw in (html, typed, script):
            self.assertEqual(self.send(raw)[0], 250)
        edits = {
            "config/attachment.filename.regex": "^invoice.*\\.html?$\n",
            "config/attachment.ctype.regex": "^application/x-msdownload$\n",
            "config/attachment.archive.filename.regex": "\\.js$\n[unclosed\n",
        }
        for path, line in edits.items():
            self.server.edit(path, lambda t, line=line: t + line)
        try:
            self.assertRefused(html, "Message contains unacceptable attachment (Invoice_2026.html)")
            self.assertRefused(typed, "Message contains unacceptable content type (application/x-msdownload)")
            self.assertRefused(script, "Message contains unacceptable attachment (pack.zip: lib/app.JS)")
            self.server.wait_for_log(r"attachment\.archive\.filename\.regex: skipping \"\[unclosed\"")
        finally:
            for path, line in edits.items():
                self.server.edit(path, lambda t, line=line: t.replace(line, ""))

    def test_reject_false_accepts_and_logs(self):
        self.server.set_settings("attachment.ini", reject="false")
        try:
            code, _, files = self.server.deliver(with_attachments("kept", ("x.exe", "application/octet-stream", b"MZ")))
        finally:
            self.server.set_settings("attachment.ini", reject="true")
        self.assertEqual(code, 250)
        self.assertIn(b"x.exe", files[0])
        self.server.wait_for_log(r'Message contains unacceptable attachment \(x\.exe\) plugin="attachment"')



class StripTest(unittest.TestCase):
    """`strip = true`: the message is delivered, each offending part
    replaced by a note, everything else as it came."""

    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["attachment", "rcpt_to.in_host_list", "queue/maildir"], setup=lambda s: s.edit(
            "config/attachment.ini", lambda t: t.replace("strip = false", "strip = true")))
        cls.addClassCleanup(cls.server.stop)

    def test_offending_parts_become_notes_and_the_rest_arrives_untouched(self):
        inner = EmailMessage()
        inner["Subject"] = "forwarded"
        inner.set_content("inner text\n")
        inner.add_attachment(b"MZ", maintype="application", subtype="octet-stream", filename="run.scr")
        raw = with_attachments("stripped", ("Setup.EXE", "application/octet-stream", b"MZ\x90\x00"),
                               ("report.pdf", "application/pdf", b"%PDF-1.4 keep me"),
                               ("pack.zip", "application/zip", zip_of({"a/run.vbs": b"x"})))
        message = email.message_from_bytes(raw, policy=email.policy.default)
        message.add_attachment(inner)
        raw = message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        code, _, files = self.server.deliver(raw)
        self.assertEqual(code, 250, "delivered, not refused")
        stored = email.message_from_bytes(files[0], policy=email.policy.default)
        parts = [p for p in stored.walk() if not p.is_multipart()]
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "text/plain", "application/pdf", "text/plain", "text/plain"])
        notes = [p.get_content().strip() for p in parts[1::2]]
        self.assertEqual(notes, [
            "The mail server removed unacceptable attachment (Setup.EXE) from this message.",
            "The mail server removed unacceptable attachment (pack.zip: a/run.vbs) from this message.",
        ])
        self.assertEqual(parts[4].get_content().strip(),
                         "The mail server removed unacceptable attachment (run.scr) from this message.",
                         "a bad file in an attached message takes the attached message")
        self.assertEqual(parts[2].get_content(), b"%PDF-1.4 keep me")
        self.assertEqual(parts[0].get_content().strip(), "See attached.")
        for removed in (b'filename="Setup.EXE"', b'filename="pack.zip"', b"inner text", b"TVqQ", b"UEsDB"):
            self.assertNotIn(removed, files[0])
        pdf = b"JVBERi0xLjQga2VlcCBtZQ==\r\n"  # b"%PDF-1.4 keep me", as Python's email encoded it
        original_pdf = raw[raw.index(b"Content-Type: application/pdf"):raw.index(pdf) + len(pdf)]
        self.assertIn(original_pdf, files[0], "the parts left are byte for byte")
        self.server.wait_for_log(r"removed 3 part\(s\): unacceptable attachment \(Setup\.EXE\)")

    def test_a_harmless_message_is_left_as_it_came(self):
        raw = with_attachments("harmless", ("report.pdf", "application/pdf", b"%PDF-1.4"))
        code, _, files = self.server.deliver(raw)
        self.assertEqual(code, 250)
        self.assertTrue(files[0].endswith(raw.split(b"\r\n\r\n", 1)[1]), "the body untouched")


if __name__ == "__main__":
    unittest.main()
