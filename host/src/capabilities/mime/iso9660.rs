//! What an ISO 9660 disc image holds (`.iso`, and the `.img` files that are
//! one: a way round the mark Windows sets on downloaded files), read from
//! its directory records in place: the Joliet names when the image has
//! them (Windows tools write them), else the primary volume's. Nothing is
//! inflated, every offset is checked against the image, a directory is
//! read once however often it is named, and the walk stops at a depth and
//! a number of names.

use std::collections::{HashSet, VecDeque};

/// The size of a logical sector, which extents count in.
const SECTOR: usize = 2048;
/// The sector of the first volume descriptor.
const FIRST_DESCRIPTOR: usize = 16;
/// The most volume descriptors read before giving up on a terminator.
const MAX_DESCRIPTORS: usize = 64;
/// The deepest directory listed.
const MAX_DEPTH: usize = 16;
/// The shortest directory record: its fixed part and a one-byte name.
const MIN_RECORD: usize = 34;

/// One file or directory of an image.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its path from the root, `/`-separated; a directory's ends with `/`.
    pub name: String,
    /// A file's content, when the image holds all of it.
    pub content: Option<&'a [u8]>,
}

/// Whether `bytes` start as a disc image: a volume descriptor of ISO 9660
/// (`CD001`) or of UDF (`BEA01`, which this module cannot list) at sector 16.
pub fn is_image(bytes: &[u8]) -> bool {
    let at = FIRST_DESCRIPTOR * SECTOR + 1;
    matches!(bytes.get(at..at + 5), Some(b"CD001" | b"BEA01"))
}

/// The entries of the image `bytes`, directories before what they hold,
/// at most `limit` of them, and whether that is all of it (false for a
/// UDF-only image, a corrupt or truncated one, one nested deeper than 16
/// directories, or more entries than `limit`).
pub fn entries(bytes: &[u8], limit: usize) -> (Vec<Entry<'_>>, bool) {
    let Some((root, joliet)) = root_directory(bytes) else {
        return (Vec::new(), false);
    };
    let mut entries = Vec::new();
    let mut complete = true;
    let mut seen = HashSet::new();
    let mut directories = VecDeque::from([(root, String::new(), 0)]);
    while let Some(((extent, size), prefix, depth)) = directories.pop_front() {
        if !seen.insert(extent) {
            continue;
        }
        let Some(listing) = extent_of(bytes, extent, size) else {
            complete = false;
            continue;
        };
        let mut at = 0;
        while at < listing.len() {
            let length = listing[at] as usize;
            if length == 0 {
                // Records do not cross sectors: the rest of this one is padding.
                at = (at / SECTOR + 1) * SECTOR;
                continue;
            }
            let Some(record) = listing.get(at..at + length).filter(|r| r.len() >= MIN_RECORD) else {
                complete = false;
                break;
            };
            at += length;
            let Some(raw_name) = record.get(33..33 + record[32] as usize) else {
                complete = false;
                break;
            };
            if raw_name == [0] || raw_name == [1] {
                continue; // the directory itself and its parent
            }
            if entries.len() >= limit {
                return (entries, false);
            }
            let path = format!("{prefix}{}", decode_name(raw_name, joliet));
            let location = (le_u32(&record[2..6]), le_u32(&record[10..14]));
            if record[25] & 0x02 != 0 {
                let name = format!("{path}/");
                if depth + 1 < MAX_DEPTH {
                    directories.push_back((location, name.clone(), depth + 1));
                } else {
                    complete = false;
                }
                entries.push(Entry { name, content: None });
            } else {
                let content = extent_of(bytes, location.0, location.1);
                complete &= content.is_some();
                entries.push(Entry { name: path, content });
            }
        }
    }
    (entries, complete)
}

/// The root directory's (extent, size) from the Joliet volume descriptor
/// if there is one, else from the primary one, and whether it is Joliet's.
fn root_directory(bytes: &[u8]) -> Option<((u32, u32), bool)> {
    let mut primary = None;
    for index in FIRST_DESCRIPTOR..FIRST_DESCRIPTOR + MAX_DESCRIPTORS {
        let descriptor = bytes.get(index * SECTOR..(index + 1) * SECTOR)?;
        if &descriptor[1..6] != b"CD001" {
            return primary;
        }
        let root = &descriptor[156..156 + MIN_RECORD];
        let location = (le_u32(&root[2..6]), le_u32(&root[10..14]));
        match descriptor[0] {
            1 => primary = Some((location, false)),
            2 if matches!(&descriptor[88..91], b"%/@" | b"%/C" | b"%/E") => return Some((location, true)),
            255 => return primary,
            _ => {}
        }
    }
    primary
}

/// The `size` bytes at sector `extent`, when the image holds them.
fn extent_of(bytes: &[u8], extent: u32, size: u32) -> Option<&[u8]> {
    let start = (extent as usize).checked_mul(SECTOR)?;
    bytes.get(start..start.checked_add(size as usize)?)
}

/// A little-endian 32-bit field (ISO 9660 stores both byte orders).
fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// A file identifier as text: UCS-2 big-endian under Joliet, else ASCII,
/// without its version (`;1`) and the dot of a name without extension.
fn decode_name(raw: &[u8], joliet: bool) -> String {
    let name = if joliet {
        let units = raw.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    } else {
        raw.iter().map(|&b| char::from(b)).collect::<String>()
    };
    let name = match name.rsplit_once(';') {
        Some((base, version)) if version.chars().all(|c| c.is_ascii_digit()) => base.to_string(),
        _ => name,
    };
    match name.strip_suffix('.') {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory record for `name` at `extent` of `size` bytes.
    fn record(name: &[u8], extent: u32, size: u32, directory: bool) -> Vec<u8> {
        let mut record = vec![0u8; 33];
        record[2..6].copy_from_slice(&extent.to_le_bytes());
        record[10..14].copy_from_slice(&size.to_le_bytes());
        record[25] = if directory { 2 } else { 0 };
        record[32] = name.len() as u8;
        record.extend_from_slice(name);
        if record.len() % 2 == 1 {
            record.push(0);
        }
        record[0] = record.len() as u8;
        record
    }

    /// An image of a primary volume whose root (sector 18) holds `records`;
    /// sector 19 holds "MZ" for files to point at.
    fn image(records: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = vec![0u8; 20 * SECTOR];
        let pvd = FIRST_DESCRIPTOR * SECTOR;
        bytes[pvd] = 1;
        bytes[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
        let root = record(&[0], 18, SECTOR as u32, true);
        bytes[pvd + 156..pvd + 156 + root.len()].copy_from_slice(&root);
        let end = (FIRST_DESCRIPTOR + 1) * SECTOR;
        bytes[end] = 255;
        bytes[end + 1..end + 6].copy_from_slice(b"CD001");
        let mut listing = record(&[0], 18, SECTOR as u32, true);
        listing.extend(record(&[1], 18, SECTOR as u32, true));
        for r in records {
            listing.extend_from_slice(r);
        }
        bytes[18 * SECTOR..18 * SECTOR + listing.len()].copy_from_slice(&listing);
        bytes[19 * SECTOR..19 * SECTOR + 2].copy_from_slice(b"MZ");
        bytes
    }

    fn names(entries: &[Entry<'_>]) -> Vec<String> {
        entries.iter().map(|e| e.name.clone()).collect()
    }

    #[test]
    fn names_lose_their_version_and_a_bare_dot() {
        assert_eq!(decode_name(b"SETUP.EXE;1", false), "SETUP.EXE");
        assert_eq!(decode_name(b"README.;1", false), "README");
        let joliet: Vec<u8> = "Invoice 2026.lnk;1".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(decode_name(&joliet, true), "Invoice 2026.lnk");
    }

    #[test]
    fn files_and_their_content_are_listed() {
        let bytes = image(&[record(b"RUN.EXE;1", 19, 2, false)]);
        assert!(is_image(&bytes));
        let (entries, complete) = entries(&bytes, 10);
        assert!(complete);
        assert_eq!(
            entries,
            [Entry {
                name: "RUN.EXE".into(),
                content: Some(b"MZ".as_slice())
            }]
        );
    }

    #[test]
    fn loops_truncations_and_limits_end_the_walk_marked_incomplete() {
        // A directory naming the root again is read once.
        let looped = image(&[record(b"AGAIN", 18, SECTOR as u32, true)]);
        assert_eq!(
            entries(&looped, 10),
            (
                vec![Entry {
                    name: "AGAIN/".into(),
                    content: None
                }],
                true
            )
        );
        // A file whose extent lies past the end of the image.
        let past_the_end = image(&[record(b"BIG.ZIP;1", 19, 1 << 30, false)]);
        let (listed, complete) = entries(&past_the_end, 10);
        assert_eq!((names(&listed), complete), (vec!["BIG.ZIP".to_string()], false));
        // More entries than the limit.
        let many: Vec<Vec<u8>> = (0..5)
            .map(|i| record(format!("F{i};1").as_bytes(), 19, 2, false))
            .collect();
        let many = image(&many);
        let (listed, complete) = entries(&many, 3);
        assert_eq!((listed.len(), complete), (3, false));
        // A record shorter than its fixed part, a cut-off image, a UDF-only one.
        let mut broken = image(&[record(b"A;1", 19, 2, false)]);
        broken[18 * SECTOR + 68] = 5;
        assert!(!entries(&broken, 10).1);
        let cut = image(&[record(b"A;1", 19, 2, false)]);
        assert!(!entries(&cut[..18 * SECTOR + 300], 10).1);
        assert_eq!(entries(&cut[..FIRST_DESCRIPTOR * SECTOR + 10], 10), (Vec::new(), false));
        let mut udf = vec![0u8; 20 * SECTOR];
        udf[FIRST_DESCRIPTOR * SECTOR + 1..FIRST_DESCRIPTOR * SECTOR + 6].copy_from_slice(b"BEA01");
        assert!(is_image(&udf));
        assert_eq!(entries(&udf, 10), (Vec::new(), false));
    }

    #[test]
    fn arbitrary_bytes_after_the_magic_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let base = image(&[record(b"A;1", 19, 2, false), record(b"D", 18, SECTOR as u32, true)]);
        for _ in 0..2000 {
            let mut bytes = base.clone();
            for _ in 0..16 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % (3 * SECTOR) + FIRST_DESCRIPTOR * SECTOR;
                bytes[at] = (state >> 32) as u8;
            }
            let _ = entries(&bytes, 100);
        }
    }
}
