//! Parts of a message written again in place: the one way the `mime`
//! edits (a banner, removed attachments) change a message. Each chosen
//! part gets new MIME fields and content; its other header fields, the
//! other parts and the boundaries stay byte for byte.

use mail_parser::{Message, MessagePart, PartType};

/// A message with some of its parts written again: what to put in place
/// of the top-level header's MIME fields, and the new body.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The top-level fields to set (those of the new part, and MIME-Version
    /// when the message had none), when the message itself is the one part
    /// written again; else empty.
    pub header_fields: Vec<(&'static str, String)>,
    /// The new body (after the header's empty line).
    pub body: Vec<u8>,
    /// How many parts were written again.
    pub parts: u32,
}

/// What a part becomes.
pub struct NewPart {
    /// Its MIME fields (Content-Type, Content-Transfer-Encoding, …); fields
    /// of these names are taken out of the part's header.
    pub fields: Vec<(&'static str, String)>,
    /// Its content, encoded as `fields` say.
    pub content: Vec<u8>,
}

impl NewPart {
    /// A text part of `content_type` holding `text` (CRLF lines), in
    /// quoted-printable, or base64 when `base64`.
    pub fn text(content_type: &str, text: &str, base64: bool) -> NewPart {
        let (encoding, content) = if base64 {
            ("base64", base64_lines(text.as_bytes()))
        } else {
            ("quoted-printable", quoted_printable::encode(text.as_bytes()))
        };
        NewPart {
            fields: vec![
                ("Content-Type", content_type.to_string()),
                ("Content-Transfer-Encoding", encoding.to_string()),
            ],
            content,
        }
    }
}

/// `message` with each of its top-level parts (those of `parsed.parts`:
/// not a multipart container, not inside an attached message) that
/// `replace` gives a new form for, by its index, written again; `None` when
/// it gives none.
pub fn rewrite_parts(
    message: &[u8],
    parsed: &Message<'_>,
    mut replace: impl FnMut(usize, &MessagePart<'_>) -> Option<NewPart>,
) -> Option<Rewritten> {
    let mut out = Vec::with_capacity(message.len() + 1024);
    let mut copied = 0usize;
    let mut header_fields = Vec::new();
    let mut parts = 0;
    for (index, part) in parsed.parts.iter().enumerate() {
        if matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let (header_start, body_start, end) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        if header_start < copied || end > message.len() {
            continue;
        }
        let Some(new) = replace(index, part) else {
            continue;
        };
        if index == 0 {
            // The message is the part: its own header changes.
            if part
                .headers
                .iter()
                .all(|h| !h.name.as_str().eq_ignore_ascii_case("MIME-Version"))
            {
                header_fields.push(("MIME-Version", "1.0".to_string()));
            }
            header_fields.extend(new.fields);
            out.extend_from_slice(&new.content);
            // The message ends with a line break, as the part may not.
            if !out.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            copied = message.len();
            parts = 1;
            break;
        }
        let names: Vec<&str> = new.fields.iter().map(|(name, _)| *name).collect();
        out.extend_from_slice(&message[copied..header_start]);
        out.extend_from_slice(&without_fields(&message[header_start..body_start], &names));
        for (name, value) in &new.fields {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&new.content);
        // The original part's last line break belongs to the boundary after it.
        if message[..end].ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        copied = end;
        parts += 1;
    }
    if parts == 0 {
        return None;
    }
    out.extend_from_slice(&message[copied..]);
    let body_start = if header_fields.is_empty() {
        super::split_header(message).0.len() + 2
    } else {
        0
    };
    Some(Rewritten {
        header_fields,
        body: out.split_off(body_start.min(out.len())),
        parts,
    })
}

/// A part header without the fields named `names` (and their folded
/// lines), without the empty line that ends it.
fn without_fields(header: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len());
    let mut skipping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            skipping = names.iter().any(|wanted| name.eq_ignore_ascii_case(wanted.as_bytes()));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out
}

/// `bytes` in base64, lines of 76 characters, each with its CRLF but the last.
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    encoded.as_bytes().chunks(76).collect::<Vec<_>>().join(&b"\r\n"[..])
}

/// `message` with `rewritten` put in place, as the message capability does.
#[cfg(test)]
pub fn whole(message: &[u8], rewritten: &Rewritten) -> Vec<u8> {
    let (header, _) = crate::capabilities::mime::split_header(message);
    let mut out: Vec<u8> = String::from_utf8_lossy(header)
        .lines()
        .filter(|line| {
            !rewritten.header_fields.iter().any(|(name, _)| {
                line.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
        })
        .flat_map(|line| format!("{line}\r\n").into_bytes())
        .collect();
    for (name, value) in &rewritten.header_fields {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&rewritten.body);
    out
}
