//! Parts taken out of a message (a dangerous attachment) and replaced by a
//! short note in their place, so the recipient learns what was removed and
//! why; the rest of the message stays byte for byte.

use super::rewrite::{NewPart, Rewritten, rewrite_parts};
use mail_parser::MessageParser;
use std::collections::BTreeMap;

/// `message` with each part named in `removals` — by its index in the
/// list [`super::parts`] gives, with the note to put in its place —
/// replaced by an inline `text/plain` part holding the note. A part inside
/// an attached message takes that whole attached message with it (its
/// notes joined). `None` when no index names a part, or the message cannot
/// be parsed.
pub fn remove_parts(message: &[u8], removals: &[(u32, String)]) -> Option<Rewritten> {
    let parsed = MessageParser::default().parse(message)?;
    let mut owners = Vec::new();
    super::each_part(&parsed, &mut |_, owner| owners.push(owner));
    let mut notes: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (index, note) in removals {
        if let Some(owner) = owners.get(*index as usize) {
            notes.entry(*owner).or_default().push(note);
        }
    }
    rewrite_parts(message, &parsed, |index, _| {
        let note = notes.get(&index)?.join("\n");
        let note = note.replace("\r\n", "\n").replace('\n', "\r\n");
        let mut part = NewPart::text("text/plain; charset=utf-8", &note, false);
        part.fields.push(("Content-Disposition", "inline".into()));
        Some(part)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::mime::rewrite::whole;

    const MIXED: &[u8] = b"From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
        --b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
        --b1\r\nContent-Type: application/octet-stream; name=setup.exe\r\n\
        Content-Disposition: attachment;\r\n filename=setup.exe\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n\
        --b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@y\r\nContent-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n\
        --b2\r\nContent-Type: text/plain\r\n\r\nInner.\r\n\
        --b2\r\nContent-Type: application/x-msdownload; name=a.scr\r\n\r\nMZ\r\n--b2--\r\n\
        --b1\r\nContent-Type: application/pdf; name=ok.pdf\r\n\r\n%PDF-1.4\r\n--b1--\r\n";

    #[test]
    fn a_removed_attachment_leaves_a_note_and_the_rest_as_it_was() {
        let listed = crate::capabilities::mime::parts(MIXED, 0);
        let names: Vec<Option<&str>> = listed.iter().map(|p| p.filename.as_deref()).collect();
        assert_eq!(
            names,
            [None, Some("setup.exe"), None, None, Some("a.scr"), Some("ok.pdf")]
        );
        let rewritten = remove_parts(MIXED, &[(1, "setup.exe was removed: an executable".into())]).unwrap();
        assert_eq!(rewritten.parts, 1);
        assert!(rewritten.header_fields.is_empty());
        let text = String::from_utf8(whole(MIXED, &rewritten)).unwrap();
        assert!(
            text.contains(
                "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\
                 Content-Disposition: inline\r\n\r\nsetup.exe was removed: an executable\r\n--b1\r\n"
            ),
            "{text}"
        );
        assert!(!text.contains("TVqQ") && !text.contains("filename=setup.exe"), "{text}");
        assert!(text.starts_with("From: a@x\r\n") && text.contains("See attached.\r\n--b1"));
        assert!(text.ends_with("%PDF-1.4\r\n--b1--\r\n"), "{text}");
        let after = crate::capabilities::mime::parts(text.as_bytes(), 0);
        assert_eq!(after.len(), listed.len(), "one part for one part");
        assert_eq!(after[1].content_type, "text/plain");
    }

    #[test]
    fn a_part_of_an_attached_message_takes_the_message_with_it() {
        let rewritten = remove_parts(
            MIXED,
            &[
                (4, "a.scr was removed".into()),
                (3, "so was its sibling".into()),
                (99, "none".into()),
            ],
        )
        .unwrap();
        assert_eq!(rewritten.parts, 1, "one attached message, once");
        let text = String::from_utf8(whole(MIXED, &rewritten)).unwrap();
        assert!(!text.contains("Inner.") && !text.contains("MZ"), "{text}");
        assert!(
            text.contains("\r\n\r\na.scr was removed\r\nso was its sibling\r\n--b1\r\n"),
            "{text}"
        );
        assert!(text.contains("TVqQAAMAAAAEAAAA"), "the other attachment stays");
        assert_eq!(remove_parts(MIXED, &[(6, "past the end".into())]), None);
    }

    #[test]
    fn a_message_that_is_the_attachment_becomes_the_note() {
        let message = b"From: a@x\r\nSubject: s\r\nContent-Type: application/octet-stream; name=x.exe\r\n\
            Content-Disposition: attachment; filename=x.exe\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQ\r\n";
        let rewritten = remove_parts(message, &[(0, "x.exe was removed".into())]).unwrap();
        let text = String::from_utf8(whole(message, &rewritten)).unwrap();
        assert!(text.contains("MIME-Version: 1.0\r\n"), "{text}");
        assert!(text.contains("Content-Disposition: inline\r\n") && !text.contains("x.exe\r\n\r\n"));
        assert!(text.ends_with("\r\n\r\nx.exe was removed\r\n"), "{text}");
        assert_eq!(crate::capabilities::mime::parts(text.as_bytes(), 0)[0].filename, None);
    }
}
