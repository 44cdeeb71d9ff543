//! A banner (a disclaimer, a footer) added to the text parts of a message,
//! as Haraka's `transaction.set_banner`: `text` at the end of each
//! `text/plain` part and `html` in a `<P>` before `</body>` of each
//! `text/html` part that is not an attachment. A changed part is written
//! again in UTF-8, quoted-printable (base64 when it was base64), with its
//! other header fields and the rest of the message as they were.

use super::rewrite::{NewPart, Rewritten, rewrite_parts};
use mail_parser::{MessageParser, MimeHeaders, PartType};

/// `message` (header and body, CRLF lines) with the banner in each text
/// part that is not an attachment (not in attached messages): `text` in
/// plain parts, `html` in HTML ones (without it, `text` with each line
/// break as `<br/>`, as Haraka does); `None` when it has no such part or
/// cannot be parsed.
pub fn add_banner(message: &[u8], text: &str, html: Option<&str>) -> Option<Rewritten> {
    let parsed = MessageParser::default().parse(message)?;
    let html = html.map_or_else(|| text.replace('\n', "<br/>\n"), str::to_string);
    rewrite_parts(message, &parsed, |_, part| {
        if part.content_disposition().is_some_and(|cd| cd.is_attachment()) {
            return None;
        }
        // Only text/plain and text/html: a calendar invitation or a vCard
        // (also text to the parser) must stay as it is.
        let subtype = part.content_type().map_or(Some("plain".to_string()), |ct| {
            ct.ctype()
                .eq_ignore_ascii_case("text")
                .then(|| ct.subtype().unwrap_or("plain").to_ascii_lowercase())
        });
        let (content, subtype) = match (&part.body, subtype.as_deref()) {
            (PartType::Text(content), Some("plain")) => (with_text_banner(content, text), "plain"),
            (PartType::Html(content), Some("html")) => (with_html_banner(content, &html), "html"),
            _ => return None,
        };
        let base64 = part
            .content_transfer_encoding()
            .is_some_and(|cte| cte.eq_ignore_ascii_case("base64"));
        Some(NewPart::text(
            &format!("text/{subtype}; charset=utf-8"),
            &content,
            base64,
        ))
    })
}

/// Plain text with the banner on its own lines at the end (its line
/// breaks made CRLF, as the message's are).
fn with_text_banner(content: &str, banner: &str) -> String {
    let content = content.trim_end_matches(['\r', '\n']);
    let banner = banner.replace("\r\n", "\n").replace('\n', "\r\n");
    format!("{content}\r\n{banner}\r\n")
}

/// HTML with the banner in a paragraph before `</body>` (at the end when
/// there is none).
fn with_html_banner(content: &str, banner: &str) -> String {
    let lower = content.to_ascii_lowercase();
    let at = lower.rfind("</body>").unwrap_or(content.len());
    let banner = banner.replace("\r\n", "\n").replace('\n', "\r\n");
    format!("{}<P>{banner}</P>{}", &content[..at], &content[at..])
}

#[cfg(test)]
mod tests {
    use super::add_banner;
    use crate::capabilities::mime::rewrite::whole;

    fn decoded_texts(message: &[u8]) -> Vec<String> {
        let parsed = mail_parser::MessageParser::default().parse(message).unwrap();
        parsed
            .parts
            .iter()
            .filter_map(|p| match &p.body {
                mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_single_part_latin1_message_becomes_utf8() {
        let message = b"From: a@x\r\nSubject: hi\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
            Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9 ouvert\r\n";
        let bannered = add_banner(message, "-- \r\nSent by Example \u{2014} legal text", Some("x")).unwrap();
        assert_eq!(bannered.parts, 1);
        assert!(bannered.header_fields.contains(&("MIME-Version", "1.0".into())));
        let text = decoded_texts(&whole(message, &bannered));
        assert_eq!(text, ["Café ouvert\r\n-- \r\nSent by Example \u{2014} legal text\r\n"]);
    }

    #[test]
    fn multipart_text_and_html_get_it_and_attachments_do_not() {
        let message = b"From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
            --b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n\
            --b2\r\nContent-Type: text/plain; charset=utf-8; format=flowed\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\nHello =E2=9C=93\r\n\
            --b2\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            PGh0bWw+PGJvZHk+SGk8L2JvZHk+PC9odG1sPg==\r\n--b2--\r\n\
            --b1\r\nContent-Type: text/plain; name=notes.txt\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\n\
            attached\r\n--b1--\r\n";
        let bannered = add_banner(message, "Legal", Some("<b>Legal</b>")).unwrap();
        assert_eq!(bannered.parts, 2);
        assert!(bannered.header_fields.is_empty());
        let rebuilt = whole(message, &bannered);
        assert_eq!(
            decoded_texts(&rebuilt),
            [
                "Hello \u{2713}\r\nLegal\r\n",
                "<html><body>Hi<P><b>Legal</b></P></body></html>",
                "attached"
            ]
        );
        let text = String::from_utf8_lossy(&rebuilt);
        assert!(
            text.contains(
                "--b2\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("attached\r\n--b1--\r\n"), "{text}");
    }

    #[test]
    fn calendars_and_attached_messages_are_left_alone() {
        let message = b"From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
            --b1\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n\
            --b1\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n\
            --b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@y\r\nSubject: inner\r\n\r\nInner text.\r\n\
            --b1--\r\n";
        let bannered = add_banner(message, "Legal", None).unwrap();
        assert_eq!(bannered.parts, 1);
        let text = String::from_utf8_lossy(&bannered.body);
        assert!(
            text.contains(
                "--b1\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n--b1"
            ),
            "{text}"
        );
        assert!(text.contains("\r\n\r\nInner text.\r\n--b1--\r\n"), "{text}");
        assert_eq!(text.matches("Legal").count(), 1, "{text}");
    }

    #[test]
    fn nothing_to_add_to_is_none() {
        let message =
            b"From: a@x\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n";
        assert_eq!(add_banner(message, "Legal", None), None);
    }
}
