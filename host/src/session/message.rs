//! The message of a transaction: spooled while DATA arrives (in memory up to
//! a threshold, then to a file, so a large message is never held whole in
//! memory), then readable as it will be queued, header edits included.
//!
//! The header is split into raw fields by hand rather than with a MIME
//! parser because edits must keep every untouched byte exactly as received.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where and when message data goes to disk.
#[derive(Clone, Debug)]
pub struct SpoolSettings {
    /// Where spooled messages are written.
    pub dir: PathBuf,
    /// Messages up to this many bytes stay in memory.
    pub memory_threshold: usize,
}

/// Accumulates one message while DATA arrives.
pub struct SpoolWriter {
    settings: SpoolSettings,
    name: String,
    memory: Vec<u8>,
    file: Option<(File, PathBuf)>,
    len: u64,
}

impl SpoolWriter {
    /// A writer for the message of transaction `name` (used as the file name).
    pub fn new(settings: &SpoolSettings, name: &str) -> Self {
        SpoolWriter {
            settings: settings.clone(),
            name: name.to_string(),
            memory: Vec::new(),
            file: None,
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends message bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len += bytes.len() as u64;
        if let Some((file, _)) = &mut self.file {
            return file.write_all(bytes);
        }
        if self.memory.len() + bytes.len() <= self.settings.memory_threshold {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        std::fs::create_dir_all(&self.settings.dir)?;
        let path = self.settings.dir.join(format!("{}.eml", self.name));
        let mut file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        file.write_all(&self.memory)?;
        file.write_all(bytes)?;
        self.memory = Vec::new();
        self.file = Some((file, path));
        Ok(())
    }

    /// Finishes the message and parses its header (reading at most `max_header` bytes of it).
    pub fn finish(self, max_header: usize) -> io::Result<Message> {
        let storage = match self.file {
            Some((file, path)) => Storage::File { file, path },
            None => Storage::Memory(self.memory),
        };
        let head_len = (self.len as usize).min(max_header + 2);
        let mut head = vec![0; head_len];
        storage.read_at(&mut head, 0)?;
        let (fields, body_start, header_complete) = parse_header(&head);
        let header_too_large = !header_complete && self.len as usize > max_header;
        Ok(Message {
            storage: Arc::new(storage),
            len: self.len,
            fields,
            body_start,
            header_too_large,
        })
    }
}

enum Storage {
    Memory(Vec<u8>),
    File { file: File, path: PathBuf },
}

impl Storage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Storage::Memory(data) => {
                let start = (offset as usize).min(data.len());
                let n = buf.len().min(data.len() - start);
                buf[..n].copy_from_slice(&data[start..start + n]);
                Ok(n)
            }
            Storage::File { file, .. } => {
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], offset + done as u64)? {
                        0 => break,
                        n => done += n,
                    }
                }
                Ok(done)
            }
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::File { path, .. } = self {
            let _ = std::fs::remove_file(path as &Path);
        }
    }
}

/// One header field, raw (name, colon, value and folding, with CRLFs).
#[derive(Clone, Debug)]
struct Field {
    name: String,
    raw: Vec<u8>,
}

impl Field {
    /// A new field `name: value`. Long values may carry their own folding
    /// as `\r\n\t`; anything else with CR/LF is refused.
    fn new(name: &str, value: &str) -> Result<Field, HeaderError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(HeaderError::BadName);
        }
        let unfolded = value.replace("\r\n\t", "").replace("\r\n ", "");
        if unfolded.contains(['\r', '\n', '\0']) {
            return Err(HeaderError::BadValue);
        }
        let raw = format!("{name}: {value}\r\n").into_bytes();
        if raw.len() > MAX_ADDED_FIELD {
            return Err(HeaderError::TooLong);
        }
        Ok(Field {
            name: name.to_string(),
            raw,
        })
    }

    fn value(&self) -> String {
        let raw = String::from_utf8_lossy(&self.raw);
        let value = raw.split_once(':').map_or("", |(_, v)| v);
        value.replace("\r\n", "").replace('\n', "").trim().to_string()
    }
}

/// Splits the header into fields. Returns the fields, where the body starts
/// and whether the header ended (blank line, non-field line or end of message)
/// within `head`.
fn parse_header(head: &[u8]) -> (Vec<Field>, u64, bool) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < head.len() {
        let Some(eol) = head[pos..].windows(2).position(|w| w == b"\r\n") else {
            return (fields, pos as u64, false);
        };
        let line = &head[pos..pos + eol + 2];
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some(field) => field.raw.extend_from_slice(line),
                None => return (fields, pos as u64, true),
            }
        } else {
            let name = line.iter().position(|&b| b == b':').map(|i| &line[..i]);
            match name {
                Some(name) if !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic()) => fields.push(Field {
                    name: String::from_utf8_lossy(name).into_owned(),
                    raw: line.to_vec(),
                }),
                // A blank line or a non-field line: the body starts here.
                _ => return (fields, pos as u64, true),
            }
        }
        pos += eol + 2;
    }
    (fields, pos as u64, true)
}

/// A complete message with the header edits plugins made.
pub struct Message {
    storage: Arc<Storage>,
    len: u64,
    /// The header fields as they will be queued, edits included.
    fields: Vec<Field>,
    body_start: u64,
    /// The header did not end within the size limit.
    pub header_too_large: bool,
}

/// The message as it will be queued, read from the start (see [`Message::reader`]).
pub struct MessageReader {
    header: Vec<u8>,
    storage: Arc<Storage>,
    body_start: u64,
    len: u64,
    pos: u64,
}

impl io::Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let header_len = self.header.len() as u64;
        let n = if self.pos < header_len {
            let rest = &self.header[self.pos as usize..];
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            n
        } else {
            let offset = self.body_start + (self.pos - header_len);
            let n = buf.len().min(self.len.saturating_sub(offset) as usize);
            self.storage.read_at(&mut buf[..n], offset)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Why a header edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header name must be printable ASCII without ':'")]
    /// The name is empty, not printable ASCII, or has a `:`.
    BadName,
    #[error("header value must not contain CR, LF or NUL")]
    /// The value has CR, LF or NUL.
    BadValue,
    #[error("header field too long")]
    /// The whole field is over the limit.
    TooLong,
}

/// Longest header field a plugin may add.
const MAX_ADDED_FIELD: usize = 8 * 1024;

impl Message {
    fn header_bytes(&self) -> Vec<u8> {
        self.fields.iter().flat_map(|f| f.raw.iter().copied()).collect()
    }

    /// Size of the message as it will be queued.
    pub fn size(&self) -> u64 {
        let header: usize = self.fields.iter().map(|f| f.raw.len()).sum();
        header as u64 + (self.len - self.body_start)
    }

    /// Size of the message as received.
    pub fn received_size(&self) -> u64 {
        self.len
    }

    /// Up to `max` bytes at `offset` of the message as it will be queued.
    pub fn read(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let header = self.header_bytes();
        let mut out = Vec::with_capacity(max.min(1 << 20));
        let mut offset = offset;
        if (offset as usize) < header.len() {
            let start = offset as usize;
            let n = max.min(header.len() - start);
            out.extend_from_slice(&header[start..start + n]);
            offset += n as u64;
        }
        let want = max - out.len();
        if want > 0 {
            let body_offset = self.body_start + (offset - header.len() as u64);
            if body_offset < self.len {
                let n = want.min((self.len - body_offset) as usize);
                let at = out.len();
                out.resize(at + n, 0);
                let got = self.storage.read_at(&mut out[at..], body_offset)?;
                out.truncate(at + got);
            }
        }
        Ok(out)
    }

    /// A reader over the message as it will be queued, as it is now. It
    /// shares the spooled body, so it outlives neither a lock nor a copy.
    pub fn reader(&self) -> MessageReader {
        MessageReader {
            header: self.header_bytes(),
            storage: self.storage.clone(),
            body_start: self.body_start,
            len: self.len,
            pos: 0,
        }
    }

    /// Every field as (name, unfolded value), in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.fields.iter().map(|f| (f.name.clone(), f.value())).collect()
    }

    /// Unfolded values of every field with this name.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(Field::value)
            .collect()
    }

    /// The values `header` gives, with RFC 2047 encoded-words decoded.
    pub fn header_decoded(&self, name: &str) -> Vec<String> {
        self.header(name)
            .iter()
            .map(|value| decode_encoded_words(value))
            .collect()
    }

    /// How many fields with this name the message has.
    pub fn count(&self, name: &str) -> usize {
        self.fields.iter().filter(|f| f.name.eq_ignore_ascii_case(name)).count()
    }

    /// Adds a field on top of the header. Long values may carry their own
    /// folding as `\r\n\t`; anything else with CR/LF is refused.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.insert_header(0, name, value)
    }

    /// Inserts a field before the one at `position` in [`Message::headers`]
    /// (0 is the top; past the last field, at the end of the header).
    pub fn insert_header(&mut self, position: u32, name: &str, value: &str) -> Result<(), HeaderError> {
        let field = Field::new(name, value)?;
        let at = (position as usize).min(self.fields.len());
        self.fields.insert(at, field);
        Ok(())
    }

    /// Where the field with this name at `index` (as [`Message::header`]
    /// lists them) is in the whole header.
    fn position_of(&self, name: &str, index: u32) -> Option<usize> {
        self.fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name.eq_ignore_ascii_case(name))
            .nth(index as usize)
            .map(|(at, _)| at)
    }

    /// Sets the value of the field with this name at `index` (as
    /// [`Message::header`] lists them), keeping its place and the spelling
    /// of its name; false if there is no such field.
    pub fn replace_header_at(&mut self, name: &str, index: u32, value: &str) -> Result<bool, HeaderError> {
        let Some(at) = self.position_of(name, index) else {
            return Ok(false);
        };
        let field = Field::new(&self.fields[at].name, value)?;
        self.fields[at] = field;
        Ok(true)
    }

    /// Puts `body` (CRLF lines) in place of the message's body; the header
    /// stays as it is. The new body is held in memory.
    pub fn replace_body(&mut self, body: &[u8]) {
        let mut stored = Vec::with_capacity(body.len() + 2);
        stored.extend_from_slice(b"\r\n");
        stored.extend_from_slice(body);
        self.len = stored.len() as u64;
        self.storage = Arc::new(Storage::Memory(stored));
        self.body_start = 0;
    }

    /// Removes every field with this name; returns how many.
    pub fn remove_header(&mut self, name: &str) -> u32 {
        let before = self.fields.len();
        self.fields.retain(|f| !f.name.eq_ignore_ascii_case(name));
        (before - self.fields.len()) as u32
    }

    /// Removes the field with this name at `index`, counted as
    /// [`Message::header`] lists them; false if there is no such field.
    pub fn remove_header_at(&mut self, name: &str, index: u32) -> bool {
        match self.position_of(name, index) {
            Some(at) => {
                self.fields.remove(at);
                true
            }
            None => false,
        }
    }
}

/// An unstructured field value with its RFC 2047 encoded-words decoded to
/// UTF-8 (mail-parser's reading of unstructured text; charsets it does not
/// know leave the word as it is).
pub fn decode_encoded_words(value: &str) -> String {
    let line = format!("{value}\r\n");
    match mail_parser::parsers::MessageStream::new(line.as_bytes()).parse_unstructured() {
        mail_parser::HeaderValue::Text(text) => text.into_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8], threshold: usize) -> (tempfile::TempDir, Message) {
        let dir = tempfile::tempdir().unwrap();
        let settings = SpoolSettings {
            dir: dir.path().into(),
            memory_threshold: threshold,
        };
        let mut w = SpoolWriter::new(&settings, "t1");
        for chunk in data.chunks(7) {
            w.write(chunk).unwrap();
        }
        let m = w.finish(1024).unwrap();
        (dir, m)
    }

    fn read_all(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let chunk = m.read(out.len() as u64, 5).unwrap();
            if chunk.is_empty() {
                return out;
            }
            out.extend_from_slice(&chunk);
        }
    }

    const MSG: &[u8] = b"Subject: hi\r\nTo: a@b,\r\n c@d\r\n\r\nbody\r\n";

    #[test]
    fn untouched_messages_read_back_byte_for_byte_from_memory_and_file() {
        for threshold in [0, 1 << 20] {
            let (_dir, m) = message(MSG, threshold);
            assert_eq!(read_all(&m), MSG);
            assert_eq!(m.header("to"), vec!["a@b, c@d".to_string()]);
            assert_eq!(m.size(), MSG.len() as u64);
        }
    }

    #[test]
    fn edits_apply_to_what_is_read() {
        let (_dir, mut m) = message(MSG, 0);
        m.add_header("Received", "from x\r\n\tby y").unwrap();
        assert_eq!(m.remove_header("subject"), 1);
        let expected = b"Received: from x\r\n\tby y\r\nTo: a@b,\r\n c@d\r\n\r\nbody\r\n";
        assert_eq!(read_all(&m), expected);
        assert_eq!(m.size(), expected.len() as u64);
        for threshold in [0, 1 << 20] {
            let (_dir, mut m) = message(MSG, threshold);
            m.add_header("Received", "from x").unwrap();
            let mut streamed = Vec::new();
            io::Read::read_to_end(&mut m.reader(), &mut streamed).unwrap();
            assert_eq!(streamed, read_all(&m), "the reader sees the edited message");
        }
        assert_eq!(m.add_header("X", "a\r\nBcc: evil"), Err(HeaderError::BadValue));
        assert_eq!(m.add_header("X:Y", "a"), Err(HeaderError::BadName));
    }

    #[test]
    fn one_field_of_a_name_can_be_removed_by_its_index() {
        let data = b"X-A: 1\r\nTo: a@b\r\nx-a: 2\r\nX-A: 3\r\n\r\nbody\r\n";
        let (_dir, mut m) = message(data, 1 << 20);
        m.add_header("X-A", "0").unwrap();
        assert_eq!(m.header("x-a"), ["0", "1", "2", "3"]);
        assert!(m.remove_header_at("X-A", 2), "the second received field");
        assert_eq!(m.header("x-a"), ["0", "1", "3"]);
        assert!(m.remove_header_at("x-a", 0), "the added field");
        assert_eq!(m.header("x-a"), ["1", "3"], "indices count only the live fields");
        assert!(!m.remove_header_at("X-A", 2));
        assert!(!m.remove_header_at("Subject", 0));
        assert_eq!(read_all(&m), b"X-A: 1\r\nTo: a@b\r\nX-A: 3\r\n\r\nbody\r\n");
    }

    #[test]
    fn fields_are_inserted_and_replaced_in_place() {
        let data = b"Subject: hi\r\nTo: a@b,\r\n c@d\r\nto: e@f\r\n\r\nbody\r\n";
        let (_dir, mut m) = message(data, 1 << 20);
        m.insert_header(1, "X-Between", "1").unwrap();
        m.insert_header(99, "X-Last", "2").unwrap();
        assert_eq!(m.replace_header_at("TO", 1, "g@h"), Ok(true), "the second To");
        assert_eq!(m.replace_header_at("To", 2, "x@y"), Ok(false));
        assert_eq!(
            m.replace_header_at("To", 0, "a\r\nBcc: evil"),
            Err(HeaderError::BadValue)
        );
        let expected = b"Subject: hi\r\nX-Between: 1\r\nTo: a@b,\r\n c@d\r\nto: g@h\r\nX-Last: 2\r\n\r\nbody\r\n";
        assert_eq!(
            read_all(&m),
            expected,
            "the name keeps its spelling, the others their bytes"
        );
        assert_eq!(m.size(), expected.len() as u64);
        assert_eq!(m.insert_header(0, "Bad:Name", "x"), Err(HeaderError::BadName));
    }

    #[test]
    fn a_new_body_keeps_the_header_and_its_edits() {
        for threshold in [0, 1 << 20] {
            let (_dir, mut m) = message(MSG, threshold);
            m.add_header("X-Seen", "1").unwrap();
            m.replace_body(b"new\r\nbody\r\n");
            let expected = b"X-Seen: 1\r\nSubject: hi\r\nTo: a@b,\r\n c@d\r\n\r\nnew\r\nbody\r\n";
            assert_eq!(read_all(&m), expected);
            assert_eq!(m.size(), expected.len() as u64);
            let mut streamed = Vec::new();
            io::Read::read_to_end(&mut m.reader(), &mut streamed).unwrap();
            assert_eq!(streamed, expected);
        }
    }

    #[test]
    fn spool_file_is_removed_with_the_message() {
        let (dir, m) = message(MSG, 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(m);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn oversized_headers_are_flagged() {
        let mut data = Vec::new();
        for i in 0..200 {
            data.extend_from_slice(format!("X-{i}: value\r\n").as_bytes());
        }
        data.extend_from_slice(b"\r\nbody\r\n");
        let (_dir, m) = message(&data, 0);
        assert!(m.header_too_large);
        let (_dir, m) = message(MSG, 0);
        assert!(!m.header_too_large);
    }

    #[test]
    fn encoded_words_are_decoded_and_plain_text_kept() {
        assert_eq!(
            decode_encoded_words("=?iso-8859-1?q?J=F6rg?= <j@example.com>"),
            "Jörg <j@example.com>"
        );
        assert_eq!(
            decode_encoded_words("=?UTF-8?B?w6l0w6k=?= and =?utf-8?q?hiver?="),
            "été and hiver"
        );
        assert_eq!(decode_encoded_words("plain  text"), "plain  text");
        assert_eq!(decode_encoded_words("=?bogus?x?y?="), "=?bogus?x?y?=");
    }
}
