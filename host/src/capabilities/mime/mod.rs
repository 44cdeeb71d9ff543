//! The MIME structure of a message for policy: its content parts with
//! their type, file name and size, and what the zip, tar, 7z and RAR
//! archives and ISO 9660 disc images among them hold, looking into zips
//! inside them (not inside 7z or RAR) within limits that keep a zip bomb from costing more
//! than a bounded amount of memory and time.

mod banner;
mod iso9660;
mod rewrite;
mod strip;

pub use banner::add_banner;
pub use rewrite::Rewritten;
pub use strip::remove_parts;

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use std::io::{Cursor, Read};

/// The most names an archive listing holds.
pub const MAX_ARCHIVE_NAMES: usize = 1000;
/// The most bytes the archives inside archives of one message may inflate to.
pub const MAX_INFLATED: u64 = 32 * 1024 * 1024;
/// The most memory, in KiB, decoding a 7z archive's (compressed) header may take.
const MAX_7Z_HEADER_KB: usize = 16 * 1024;
/// How deep attached messages are followed.
const MAX_MESSAGE_DEPTH: u32 = 10;

/// What an archive holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archive {
    /// Entry names in order; entries of inner archives as `inner.zip/name`.
    pub names: Vec<String>,
    /// Whether an entry is encrypted.
    pub encrypted: bool,
    /// Whether the listing is partial (corrupt, too deep, too many names, or
    /// inner archives past [`MAX_INFLATED`]).
    pub incomplete: bool,
}

/// One part of a message that holds content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// `type/subtype`, lower-case.
    pub content_type: String,
    /// The decoded file name, from Content-Disposition or Content-Type.
    pub filename: Option<String>,
    /// Whether Content-Disposition says `attachment`.
    pub attachment: bool,
    /// The size of the decoded content.
    pub size: u64,
    /// What it holds, when it is an archive or a disc image.
    pub archive: Option<Archive>,
}

/// The decoded text of one text part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    /// `text/plain` or `text/html`.
    pub content_type: &'static str,
    /// The content in UTF-8.
    pub text: String,
}

/// A message's header section (its fields, each with its CRLF, without the
/// empty line) and its body. A message without an empty line is all header.
pub fn split_header(message: &[u8]) -> (&[u8], &[u8]) {
    if let Some(body) = message.strip_prefix(b"\r\n") {
        return (&[], body);
    }
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(at) => (&message[..at + 2], &message[at + 4..]),
        None => (message, &[]),
    }
}

/// The text parts of `message` that are not attachments (an attached
/// message's too), in order, with at most `max_bytes` of text in all.
pub fn texts(message: &[u8], max_bytes: usize) -> Vec<Text> {
    let mut out = Vec::new();
    let mut left = max_bytes;
    if let Some(parsed) = MessageParser::default().parse(message) {
        collect_texts(&parsed, MAX_MESSAGE_DEPTH, &mut left, &mut out);
    }
    out
}

fn collect_texts(message: &mail_parser::Message<'_>, depth: u32, left: &mut usize, out: &mut Vec<Text>) {
    for part in &message.parts {
        if *left == 0 {
            return;
        }
        let attachment = part.content_disposition().is_some_and(|cd| cd.is_attachment());
        let (content_type, text) = match &part.body {
            PartType::Text(text) if !attachment => ("text/plain", text),
            PartType::Html(html) if !attachment => ("text/html", html),
            PartType::Message(inner) if depth > 0 => {
                collect_texts(inner, depth - 1, left, out);
                continue;
            }
            _ => continue,
        };
        let mut end = text.len().min(*left);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        // A part that was cut ends the text: nothing after it is whole.
        *left = if end < text.len() { 0 } else { *left - end };
        out.push(Text {
            content_type,
            text: text[..end].to_string(),
        });
    }
}

/// The content parts of `message`, in order (an attached message's parts
/// follow it), looking `archive_depth` levels into zip archives.
pub fn parts(message: &[u8], archive_depth: u32) -> Vec<Part> {
    let mut out = Vec::new();
    let mut budget = MAX_INFLATED;
    if let Some(parsed) = MessageParser::default().parse(message) {
        each_part(&parsed, &mut |part, _| {
            out.push(describe(part, archive_depth, &mut budget));
        });
    }
    out
}

/// Visits each content part of `message` in the order [`parts`] lists
/// them, with the index in `message.parts` of the top-level part it is or
/// is inside (an attached message).
fn each_part<'x>(message: &Message<'x>, visit: &mut impl FnMut(&MessagePart<'x>, usize)) {
    fn walk<'x>(
        message: &Message<'x>,
        depth: u32,
        owner: Option<usize>,
        visit: &mut impl FnMut(&MessagePart<'x>, usize),
    ) {
        for (index, part) in message.parts.iter().enumerate() {
            if matches!(part.body, PartType::Multipart(_)) {
                continue;
            }
            let owner = owner.unwrap_or(index);
            visit(part, owner);
            if let PartType::Message(inner) = &part.body
                && depth > 0
            {
                walk(inner, depth - 1, Some(owner), visit);
            }
        }
    }
    walk(message, MAX_MESSAGE_DEPTH, None, visit);
}

/// What policy sees of one content part.
fn describe(part: &MessagePart<'_>, archive_depth: u32, budget: &mut u64) -> Part {
    let content_type = part.content_type().map_or_else(
        || "text/plain".to_string(),
        |ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase(),
    );
    let archive = if archive_depth > 0 {
        archive_of(part.contents(), archive_depth, budget)
    } else {
        None
    };
    Part {
        content_type,
        filename: part.attachment_name().map(str::to_string),
        attachment: part.content_disposition().is_some_and(|cd| cd.is_attachment()),
        size: part.len() as u64,
        archive,
    }
}

/// What the archive `contents` holds — a zip, a tar, a tar compressed
/// with gzip (`.tar.gz`, `.tgz`), a 7z, a RAR or an ISO 9660 disc image,
/// recognised by content — looking `depth` levels into the zips inside it;
/// `None` when it is none of those.
fn archive_of(contents: &[u8], depth: u32, budget: &mut u64) -> Option<Archive> {
    let mut archive = Archive::default();
    if is_zip(contents) {
        list_zip(contents, "", depth, budget, &mut archive);
    } else if is_tar(contents) {
        list_tar(contents, depth, budget, &mut archive);
    } else if contents.starts_with(&[0x1f, 0x8b]) {
        let tar = gunzip_tar(contents, budget, &mut archive)?;
        list_tar(&tar, depth, budget, &mut archive);
    } else if iso9660::is_image(contents) {
        list_image(contents, depth, budget, &mut archive);
    } else if contents.starts_with(SEVEN_Z_SIGNATURE) {
        list_7z(contents, &mut archive);
    } else if contents.starts_with(RAR_SIGNATURE) {
        list_rar(contents, &mut archive);
    } else {
        return None;
    }
    Some(archive)
}

/// What a 7z archive starts with.
const SEVEN_Z_SIGNATURE: &[u8] = &[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C];

/// What a RAR archive of version 1.5 to 7 starts with (`Rar!`, then the
/// version's own bytes).
const RAR_SIGNATURE: &[u8] = b"Rar!\x1a\x07";

/// The most header bytes a RAR listing reads.
const MAX_RAR_HEADER_BYTES: u64 = 16 * 1024 * 1024;

/// Adds the names in the RAR archive `bytes` to `archive`, reading only its
/// headers (at most [`MAX_RAR_HEADER_BYTES`]). Like a 7z's, its files are
/// not decompressed: an archive inside it (by name) makes the listing
/// incomplete, as does an archive cut short or one volume of several. An
/// encrypted header hides every name. RAR 1.3 (1993) is not recognised.
fn list_rar(bytes: &[u8], archive: &mut Archive) {
    let options = rars::ArchiveReadOptions::new()
        .with_max_header_count(MAX_ARCHIVE_NAMES as u64 * 4)
        .with_max_header_bytes(MAX_RAR_HEADER_BYTES);
    let listing = match rars::ArchiveReader::read_with_options(bytes, options) {
        Ok(listing) => listing,
        Err(e) => {
            archive.encrypted |= e.kind() == rars::ErrorKind::PasswordRequired;
            archive.incomplete = true;
            return;
        }
    };
    // One volume of several, or cut short: a RAR 5 always ends with an end
    // block; an older one may leave it out (`rar -en`), and then its last
    // file's data ends the archive.
    archive.incomplete |= match &listing {
        rars::Archive::Rar15To40(rar) => {
            rar.main.is_volume()
                || !match rar.blocks.last() {
                    Some(rars::rar15_40::Block::End(_)) => true,
                    Some(rars::rar15_40::Block::File(file)) => file.packed_range.end == bytes.len(),
                    _ => false,
                }
        }
        rars::Archive::Rar50Plus(rar) => {
            rar.main.is_volume() || !matches!(rar.blocks.last(), Some(rars::rar50::Block::End(_)))
        }
        _ => true,
    };
    for member in listing.members() {
        let name = match member.decoded_name(None) {
            Ok(name) => String::from_utf8_lossy(&name).replace('\\', "/"),
            Err(_) => {
                archive.incomplete = true;
                continue;
            }
        };
        archive.encrypted |= member.meta.is_encrypted;
        if !add_packed_name(archive, name, member.meta.is_directory) {
            return;
        }
    }
}

/// The names that mark an archive or disc image inside an archive whose
/// members are not unpacked (7z, RAR).
const PACKED_ARCHIVE_NAMES: [&str; 8] = [".zip", ".tar", ".tgz", ".gz", ".7z", ".rar", ".iso", ".img"];

/// Adds one member's name of an archive whose members are not unpacked;
/// `false` once [`MAX_ARCHIVE_NAMES`] is reached (the listing is incomplete).
fn add_packed_name(archive: &mut Archive, name: String, directory: bool) -> bool {
    if archive.names.len() >= MAX_ARCHIVE_NAMES {
        archive.incomplete = true;
        return false;
    }
    let lower = name.to_ascii_lowercase();
    if PACKED_ARCHIVE_NAMES.iter().any(|ext| lower.ends_with(ext)) {
        archive.incomplete = true;
    }
    archive.names.push(if directory { format!("{name}/") } else { name });
    true
}

/// Adds the names in the 7z archive `bytes` to `archive`, reading only its
/// header (decoded within [`MAX_7Z_HEADER_KB`]). Its files are compressed
/// together and stay so: an archive inside it (by name) is not opened and
/// makes the listing incomplete. An encrypted header hides every name.
fn list_7z(bytes: &[u8], archive: &mut Archive) {
    let read = sevenz_rust2::Archive::read_with_memory_limit(
        &mut Cursor::new(bytes),
        &sevenz_rust2::Password::empty(),
        MAX_7Z_HEADER_KB,
    );
    let listing = match read {
        Ok(listing) => listing,
        Err(sevenz_rust2::Error::PasswordRequired) => {
            archive.encrypted = true;
            archive.incomplete = true;
            return;
        }
        Err(_) => {
            archive.incomplete = true;
            return;
        }
    };
    archive.encrypted |= listing.blocks.iter().any(|block| {
        block
            .coders
            .iter()
            .any(|coder| coder.encoder_method_id() == sevenz_rust2::EncoderMethod::ID_AES256_SHA256)
    });
    for entry in &listing.files {
        if !add_packed_name(archive, entry.name().to_string(), entry.is_directory()) {
            return;
        }
    }
}

/// Adds the paths in the disc image `bytes` to `archive`, and those of the
/// zips in it while `depth` and `budget` allow (an image stores its files
/// as they are: listing it inflates nothing).
fn list_image(bytes: &[u8], depth: u32, budget: &mut u64, archive: &mut Archive) {
    let (entries, complete) = iso9660::entries(bytes, MAX_ARCHIVE_NAMES.saturating_sub(archive.names.len()));
    archive.incomplete |= !complete;
    for entry in entries {
        let inner = entry.content.filter(|content| is_zip(content));
        archive.names.push(entry.name);
        let Some(inner) = inner else {
            continue;
        };
        if depth <= 1 {
            archive.incomplete = true;
            continue;
        }
        let prefix = format!("{}/", archive.names[archive.names.len() - 1]);
        list_zip(inner, &prefix, depth - 1, budget, archive);
    }
}

/// Whether `bytes` start as a tar archive (the `ustar` magic of its first
/// header: POSIX and GNU tar both write it).
fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar".as_slice())
}

/// The gzip-compressed `bytes` inflated within `budget`, when they hold a
/// tar; `None` for anything else. A tar cut short by the budget is listed
/// as far as it goes and marked `incomplete`.
fn gunzip_tar(bytes: &[u8], budget: &mut u64, archive: &mut Archive) -> Option<Vec<u8>> {
    let mut inflated = Vec::new();
    let mut gz = flate2::read::GzDecoder::new(bytes).take(*budget);
    if (&mut gz).take(512).read_to_end(&mut inflated).is_err() || !is_tar(&inflated) {
        return None;
    }
    if gz.read_to_end(&mut inflated).is_err() {
        archive.incomplete = true;
    }
    *budget = budget.saturating_sub(inflated.len() as u64);
    if *budget == 0 {
        archive.incomplete = true;
    }
    Some(inflated)
}

/// Adds the names in the tar `bytes` to `archive`, and those of the zips
/// in it while `depth` and `budget` allow.
fn list_tar(bytes: &[u8], depth: u32, budget: &mut u64, archive: &mut Archive) {
    let mut tar = tar::Archive::new(bytes);
    let Ok(entries) = tar.entries() else {
        archive.incomplete = true;
        return;
    };
    for entry in entries {
        if archive.names.len() >= MAX_ARCHIVE_NAMES {
            archive.incomplete = true;
            return;
        }
        let Ok(mut entry) = entry else {
            archive.incomplete = true;
            return;
        };
        let Ok(name) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
            archive.incomplete = true;
            continue;
        };
        archive.names.push(name.clone());
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        let Some(inner) = read_if_zip(&mut entry, size, budget, archive) else {
            continue;
        };
        if depth <= 1 {
            archive.incomplete = true;
            continue;
        }
        list_zip(&inner, &format!("{name}/"), depth - 1, budget, archive);
    }
}

/// Whether `bytes` start as a zip archive (a local file header, or the end
/// record of an empty one), whatever the part is called.
fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// Adds the names in the zip `bytes` to `archive` under `prefix`, and those of
/// zips inside it while `depth` and `budget` (bytes left to inflate) allow.
fn list_zip(bytes: &[u8], prefix: &str, depth: u32, budget: &mut u64, archive: &mut Archive) {
    let Ok(mut zip) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        archive.incomplete = true;
        return;
    };
    for index in 0..zip.len() {
        if archive.names.len() >= MAX_ARCHIVE_NAMES {
            archive.incomplete = true;
            return;
        }
        let (name, encrypted, size) = match zip.by_index_raw(index) {
            Ok(entry) => match entry.name() {
                Ok(name) => (name.into_owned(), entry.encrypted(), entry.size()),
                Err(_) => {
                    archive.incomplete = true;
                    continue;
                }
            },
            Err(_) => {
                archive.incomplete = true;
                continue;
            }
        };
        archive.names.push(format!("{prefix}{name}"));
        if encrypted {
            archive.encrypted = true;
            continue;
        }
        if name.ends_with('/') {
            continue;
        }
        let Some(inner) = inflate_if_zip(&mut zip, index, size, budget, archive) else {
            continue;
        };
        if depth <= 1 {
            archive.incomplete = true;
            continue;
        }
        list_zip(&inner, &format!("{prefix}{name}/"), depth - 1, budget, archive);
    }
}

/// The content of entry `index` when it is itself a zip, inflated within
/// `budget`; `None` (and `incomplete` when that is why) otherwise.
fn inflate_if_zip(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    index: usize,
    size: u64,
    budget: &mut u64,
    archive: &mut Archive,
) -> Option<Vec<u8>> {
    read_if_zip(&mut zip.by_index(index).ok()?, size, budget, archive)
}

/// The whole of an archive's `entry` (of `size` bytes) when it is itself a
/// zip, read within `budget`; `None` (and `incomplete` when that is why)
/// otherwise.
fn read_if_zip(entry: &mut impl Read, size: u64, budget: &mut u64, archive: &mut Archive) -> Option<Vec<u8>> {
    let mut head = [0u8; 4];
    if entry.read_exact(&mut head).is_err() || !is_zip(&head) {
        return None;
    }
    if size > *budget {
        archive.incomplete = true;
        return None;
    }
    let mut inner = head.to_vec();
    let read = entry.take(budget.saturating_sub(4)).read_to_end(&mut inner);
    *budget = budget.saturating_sub(inner.len() as u64);
    if read.is_err() {
        archive.incomplete = true;
        return None;
    }
    Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::unstable::write::FileOptionsExt;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in entries {
            writer.start_file(*name, SimpleFileOptions::default()).unwrap();
            writer.write_all(content).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn with_attachment(name: &str, content_type: &str, content: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(content);
        format!(
            "From: a@b.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nHello.\r\n\
             --b1\r\nContent-Type: {content_type}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename*=UTF-8''{name}\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b1--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn texts_are_decoded_and_bounded_and_attachments_left_out() {
        let message = concat!(
            "Subject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
            "--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            "caf=E9 http://one.test/=\r\nx\r\n",
            "--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            "PGEgaHJlZj0iaHR0cDovL3R3by50ZXN0LyI+eDwvYT4=\r\n",
            "--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\n",
            "http://attached.test/\r\n",
            "--b--\r\n"
        );
        let all = texts(message.as_bytes(), 1 << 20);
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0].content_type, "text/plain");
        assert!(all[0].text.starts_with("café http://one.test/x"), "{:?}", all[0].text);
        assert_eq!(
            (all[1].content_type, all[1].text.as_str()),
            ("text/html", "<a href=\"http://two.test/\">x</a>")
        );
        let cut = texts(message.as_bytes(), 4);
        assert_eq!(
            cut,
            [Text {
                content_type: "text/plain",
                text: "caf".into()
            }],
            "cut on a character boundary"
        );
    }

    #[test]
    fn parts_have_their_type_name_and_decoded_size() {
        let message = with_attachment("report%20final.PDF", "Application/PDF", b"%PDF-1.4 twelve");
        let found = parts(&message, 5);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].content_type, "text/plain");
        assert_eq!((found[0].filename.as_deref(), found[0].attachment), (None, false));
        assert_eq!(found[1].content_type, "application/pdf");
        assert_eq!(found[1].filename.as_deref(), Some("report final.PDF"));
        assert!(found[1].attachment);
        assert_eq!(found[1].size, 15);
        assert_eq!(found[1].archive, None);
    }

    #[test]
    fn zips_are_listed_by_content_with_their_inner_zips_to_the_depth_asked() {
        let innermost = zip_of(&[("deep.exe", b"MZ")]);
        let inner = zip_of(&[("evil.scr", b"MZ"), ("more.zip", &innermost)]);
        let outer = zip_of(&[("readme.txt", b"hi"), ("docs/", b""), ("inner.bin", &inner)]);
        let message = with_attachment("harmless.dat", "application/octet-stream", &outer);
        let archive = |depth| parts(&message, depth)[1].archive.clone();
        assert_eq!(archive(0), None, "depth 0 does not look inside");
        let one = archive(1).unwrap();
        assert_eq!(one.names, ["readme.txt", "docs/", "inner.bin"]);
        assert!(one.incomplete, "an inner zip left unread makes the listing partial");
        let all = archive(3).unwrap();
        assert_eq!(
            all.names,
            [
                "readme.txt",
                "docs/",
                "inner.bin",
                "inner.bin/evil.scr",
                "inner.bin/more.zip",
                "inner.bin/more.zip/deep.exe"
            ]
        );
        assert!(!all.incomplete && !all.encrypted);
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, name, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn tars_plain_and_gzipped_are_listed_with_the_zips_in_them() {
        let inner = zip_of(&[("evil.scr", b"MZ")]);
        let tar = tar_of(&[("readme.txt", b"hi"), ("docs/inner.bin", &inner)]);
        for (bytes, what) in [(tar.clone(), "tar"), (gzip(&tar), "tar.gz")] {
            let message = with_attachment("backup.dat", "application/octet-stream", &bytes);
            let archive = parts(&message, 2)[1].archive.clone().expect(what);
            assert_eq!(
                archive.names,
                ["readme.txt", "docs/inner.bin", "docs/inner.bin/evil.scr"],
                "{what}"
            );
            assert!(!archive.incomplete, "{what}");
            let shallow = parts(&message, 1)[1].archive.clone().unwrap();
            assert!(shallow.incomplete, "{what}: the zip inside is left unread");
        }
        let not_a_tar = with_attachment("notes.gz", "application/gzip", &gzip(b"just text"));
        assert_eq!(
            parts(&not_a_tar, 2)[1].archive,
            None,
            "a gzipped file is not an archive"
        );
        let mut cut = tar.clone();
        cut.truncate(700);
        let message = with_attachment("cut.tar", "application/x-tar", &cut);
        assert!(
            parts(&message, 2)[1].archive.clone().unwrap().incomplete,
            "a tar cut short"
        );
    }

    #[test]
    fn a_gzipped_tar_inflates_only_within_the_budget() {
        let big = vec![0u8; 4 << 20];
        let bomb = gzip(&tar_of(&[("a.bin", &big), ("later.exe", b"MZ")]));
        let mut budget = 1 << 20;
        let archive = archive_of(&bomb, 2, &mut budget).unwrap();
        assert!(archive.incomplete);
        assert_eq!(archive.names, ["a.bin"], "what lies past the budget is not listed");
        assert_eq!(budget, 0);
    }

    #[test]
    fn corrupt_encrypted_and_overlong_archives_say_so() {
        let corrupt = with_attachment("a.zip", "application/zip", b"PK\x03\x04 not really a zip");
        let listed = parts(&corrupt, 5)[1].archive.clone().unwrap();
        assert!(listed.incomplete && listed.names.is_empty());

        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let secret = SimpleFileOptions::default().with_deprecated_encryption(b"pw").unwrap();
        writer.start_file("hidden.exe", secret).unwrap();
        writer.write_all(b"MZ").unwrap();
        let encrypted = writer.finish().unwrap().into_inner();
        let listed = parts(&with_attachment("e.zip", "application/zip", &encrypted), 5)[1]
            .archive
            .clone()
            .unwrap();
        assert_eq!(listed.names, ["hidden.exe"]);
        assert!(listed.encrypted);

        let many: Vec<(String, &[u8])> = (0..MAX_ARCHIVE_NAMES + 5)
            .map(|i| (format!("f{i}"), &b""[..]))
            .collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let listed = parts(&with_attachment("m.zip", "application/zip", &zip_of(&many)), 5)[1]
            .archive
            .clone()
            .unwrap();
        assert_eq!(listed.names.len(), MAX_ARCHIVE_NAMES);
        assert!(listed.incomplete);
    }

    #[test]
    fn an_inner_archive_past_the_inflation_budget_is_not_inflated() {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        writer.start_file("zeros", stored).unwrap();
        writer.write_all(&vec![0u8; MAX_INFLATED as usize + 1024]).unwrap();
        let big = writer.finish().unwrap().into_inner();
        let outer = zip_of(&[("small.zip", &zip_of(&[("a.txt", b"a")])), ("big.zip", &big)]);
        assert!(
            outer.len() < 1024 * 1024,
            "the bomb is small on the wire: {}",
            outer.len()
        );
        let listed = parts(&with_attachment("x.zip", "application/zip", &outer), 5)[1]
            .archive
            .clone()
            .unwrap();
        assert_eq!(listed.names, ["small.zip", "small.zip/a.txt", "big.zip"]);
        assert!(listed.incomplete);
    }

    /// A 7z of `entries` (a name ending in `/` is a directory), its files
    /// encrypted with `password` when given, and then its header too when
    /// `hide_names`.
    fn seven_z_of(entries: &[(&str, &[u8])], password: Option<&str>, hide_names: bool) -> Vec<u8> {
        use sevenz_rust2::encoder_options::AesEncoderOptions;
        use sevenz_rust2::{ArchiveEntry, ArchiveWriter, EncoderMethod, Password};
        let mut writer = ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
        if let Some(password) = password {
            writer.set_content_methods(vec![
                AesEncoderOptions::new(Password::new(password)).into(),
                EncoderMethod::LZMA2.into(),
            ]);
        }
        writer.set_encrypt_header(hide_names);
        for (name, content) in entries {
            match name.strip_suffix('/') {
                Some(dir) => writer.push_archive_entry::<&[u8]>(ArchiveEntry::new_directory(dir), None),
                None => writer.push_archive_entry(ArchiveEntry::new_file(name), Some(*content)),
            }
            .unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn listing(archive: &[u8]) -> Archive {
        let message = with_attachment("a.7z", "application/x-7z-compressed", archive);
        parts(&message, 3)[1].archive.clone().expect("recognised as an archive")
    }

    #[test]
    fn a_7z_is_listed_from_its_header() {
        let plain = listing(&seven_z_of(
            &[("docs/", b""), ("docs/readme.txt", b"hi"), ("run.exe", b"MZ")],
            None,
            true,
        ));
        assert_eq!(plain.names, ["docs/", "docs/readme.txt", "run.exe"]);
        assert!(!plain.encrypted && !plain.incomplete, "{plain:?}");

        let with_zip = listing(&seven_z_of(&[("inner.zip", &zip_of(&[("x.exe", b"MZ")]))], None, true));
        assert_eq!(with_zip.names, ["inner.zip"]);
        assert!(with_zip.incomplete, "a zip inside a 7z is not opened");

        let locked = listing(&seven_z_of(&[("run.exe", b"MZ")], Some("secret"), false));
        assert_eq!(locked.names, ["run.exe"], "the names of encrypted files show");
        assert!(locked.encrypted);

        let hidden = listing(&seven_z_of(&[("run.exe", b"MZ")], Some("secret"), true));
        assert!(
            hidden.names.is_empty() && hidden.encrypted && hidden.incomplete,
            "{hidden:?}"
        );

        let mut corrupt = seven_z_of(&[("run.exe", b"MZ")], None, true);
        corrupt.truncate(40);
        let corrupt = listing(&corrupt);
        assert!(corrupt.incomplete && corrupt.names.is_empty(), "{corrupt:?}");
    }

    /// A RAR archive in `format` of `entries` (a name ending in `/` is a
    /// directory), its files encrypted with `password`, and its headers
    /// too when `hide_names`.
    fn rar_of(
        format: rars::ArchiveVersion,
        entries: &[(&str, &[u8])],
        password: Option<&str>,
        hide_names: bool,
    ) -> Vec<u8> {
        let mut builder = rars::Builder::new(format)
            .password(password.map(|p| p.as_bytes().to_vec()))
            .header_encryption(hide_names);
        for (name, content) in entries {
            match name.strip_suffix('/') {
                Some(dir) => builder.add_directory(dir.as_bytes().to_vec(), None, None).unwrap(),
                None => builder
                    .add_bytes(name.as_bytes().to_vec(), content.to_vec(), None, None)
                    .unwrap(),
            }
        }
        builder.to_bytes().unwrap()
    }

    #[test]
    fn rar_archives_old_and_new_are_listed_from_their_headers() {
        for format in [rars::ArchiveVersion::Rar40, rars::ArchiveVersion::Rar50] {
            let plain = listing(&rar_of(
                format,
                &[("docs/", b""), ("docs/readme.txt", b"hi"), ("run.exe", b"MZ")],
                None,
                false,
            ));
            assert_eq!(plain.names, ["docs/", "docs/readme.txt", "run.exe"], "{format:?}");
            assert!(!plain.encrypted && !plain.incomplete, "{format:?} {plain:?}");

            let with_zip = listing(&rar_of(
                format,
                &[("inner.zip", &zip_of(&[("x.exe", b"MZ")]))],
                None,
                false,
            ));
            assert_eq!(with_zip.names, ["inner.zip"]);
            assert!(with_zip.incomplete, "a zip inside a RAR is not opened");

            let locked = listing(&rar_of(format, &[("run.exe", b"MZ")], Some("secret"), false));
            assert_eq!(locked.names, ["run.exe"], "the names of encrypted files show");
            assert!(locked.encrypted && !locked.incomplete, "{format:?} {locked:?}");

            let hidden = listing(&rar_of(format, &[("run.exe", b"MZ")], Some("secret"), true));
            assert!(
                hidden.names.is_empty() && hidden.encrypted && hidden.incomplete,
                "{format:?} {hidden:?}"
            );

            let whole = rar_of(format, &[("run.exe", b"MZ")], None, false);
            for cut in RAR_SIGNATURE.len()..whole.len() {
                let cut_short = listing(&whole[..cut]);
                assert!(
                    cut_short.incomplete && !cut_short.encrypted,
                    "{format:?} cut at {cut}: {cut_short:?}"
                );
            }
        }
    }

    #[test]
    fn rar_archives_made_by_rar_itself_are_listed() {
        let archive = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/archives")
                .join(name);
            listing(&std::fs::read(path).unwrap())
        };
        let files = archive("rar5-files.rar");
        assert_eq!(files.names, ["hello.txt", "tiny.txt", "random_4k.bin"]);
        assert!(!files.encrypted && !files.incomplete, "{files:?}");
        let locked = archive("rar4-encrypted-files.rar");
        assert_eq!(locked.names, ["1File.txt", "2中文.txt", "3Sec.txt"]);
        assert!(locked.encrypted && !locked.incomplete, "{locked:?}");
        for hidden in ["rar4-encrypted-headers.rar", "rar5-encrypted-headers.rar"] {
            let hidden = archive(hidden);
            assert!(
                hidden.names.is_empty() && hidden.encrypted && hidden.incomplete,
                "{hidden:?}"
            );
        }
        let volume = archive("rar5-volume.part1.rar");
        assert_eq!(volume.names, ["random_4k.bin"]);
        assert!(
            volume.incomplete && !volume.encrypted,
            "one volume of three: {volume:?}"
        );
    }

    #[test]
    fn attached_messages_are_looked_into() {
        let inner = with_attachment("inner.exe", "application/octet-stream", b"MZ");
        let outer = format!(
            "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n\
             --o\r\nContent-Type: message/rfc822\r\n\r\n{}\r\n--o--\r\n",
            String::from_utf8(inner).unwrap()
        );
        let found = parts(outer.as_bytes(), 1);
        let names: Vec<_> = found
            .iter()
            .map(|p| (p.content_type.as_str(), p.filename.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("message/rfc822", None),
                ("text/plain", None),
                ("application/octet-stream", Some("inner.exe"))
            ]
        );
    }
}
