//! Durable delivery of a file into a directory granted to a plugin: the
//! whole write → fsync → rename of a queue plugin (maildir's `tmp/` →
//! `new/`) in one call on the host, with paths that cannot leave the
//! directory, even through symbolic links.
//!
//! Making the new entry durable (an fsync of the target directory) is left
//! to the caller, which shares it with concurrent deliveries into the same
//! directory ([`GroupSync`](super::GroupSync)).

use super::CapabilityError;
use cap_primitives::fs::{DirOptions, OpenOptions, create_dir, open, open_ambient_dir, open_dir, remove_file, rename};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// Bytes gathered before each write: a small message is one `write`.
const WRITE_BUFFER: usize = 64 * 1024;
/// What the write buffer starts with beside the prefix (it grows up to
/// [`WRITE_BUFFER`] for larger files): most messages fit.
const FIRST_BUFFER: usize = 16 * 1024;

/// A directory files are delivered into.
pub struct DeliveryDir {
    root: File,
}

/// What a delivery wrote: its size and the directory its final name is in.
pub struct Delivered {
    /// Bytes written.
    pub bytes: u64,
    /// The directory of the delivered file's final name, still to be
    /// fsynced for the new entry to survive a crash.
    pub dir: File,
}

/// A plain relative path below a delivery directory: no `.`, `..`, empty
/// parts, leading or trailing `/`, or control characters.
pub struct RelativePath(String);

impl RelativePath {
    /// `path`, when it is plain.
    pub fn new(path: String) -> Result<RelativePath, CapabilityError> {
        check_relative(&path)?;
        Ok(RelativePath(path))
    }

    /// The parent directory (`""` for the root) and the file name.
    fn split(&self) -> (&str, &str) {
        self.0.rsplit_once('/').unwrap_or(("", &self.0))
    }
}

/// Whether `path` is a plain relative path (see [`RelativePath`]).
pub(super) fn check_relative(path: &str) -> Result<(), CapabilityError> {
    let plain = !path.is_empty()
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if !plain {
        return Err(CapabilityError::Invalid(format!(
            "{path:?}: paths are relative, without '.', '..' or empty parts"
        )));
    }
    Ok(())
}

impl DeliveryDir {
    /// Opens the directory at `path` (which the server's configuration names).
    pub fn open(path: &Path) -> io::Result<DeliveryDir> {
        let root = open_ambient_dir(path, cap_primitives::ambient_authority())?;
        Ok(DeliveryDir { root })
    }

    /// The directory `parent` below the root (the root itself for `""`),
    /// as a handle to make paths relative to.
    fn subdir(&self, parent: &str) -> io::Result<Option<File>> {
        if parent.is_empty() {
            Ok(None)
        } else {
            open_dir(&self.root, Path::new(parent)).map(Some)
        }
    }

    /// The directory `parent` below the root (the root itself for `""`),
    /// opened for reading so that it can be fsynced.
    fn readable_dir(&self, parent: &str) -> io::Result<File> {
        let path = Path::new(if parent.is_empty() { "." } else { parent });
        open(
            &self.root,
            path,
            OpenOptions::new().read(true)._cap_fs_ext_maybe_dir(true),
        )
    }

    /// Creates the directory `path` and its missing parents below the root
    /// (`mkdir -p`), fsyncing (with `fsync`) the parent of each one created
    /// so that it survives a crash; an existing directory is left as it is.
    pub fn make_dirs(
        &self,
        path: &RelativePath,
        fsync: impl Fn(&File) -> io::Result<()>,
    ) -> Result<(), CapabilityError> {
        let full = path.0.as_str();
        let ends = full.match_indices('/').map(|(i, _)| i).chain([full.len()]);
        for end in ends {
            let dir = &full[..end];
            match create_dir(&self.root, Path::new(dir), &DirOptions::new()) {
                Ok(()) => {
                    let parent = dir.rsplit_once('/').map_or(".", |(parent, _)| parent);
                    let handle = self.readable_dir(parent).map_err(failed("opening", parent))?;
                    fsync(&handle).map_err(failed("syncing", parent))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(failed("creating", dir)(e)),
            }
        }
        Ok(())
    }

    /// Writes `prefix` and then all of `source` to the new file `temp`,
    /// fsyncs it and renames it to `path` (both relative to the root; an
    /// existing file at `path` is replaced). A missing directory on either
    /// path is [`CapabilityError::NotFound`]; on any failure the temporary
    /// file is removed.
    pub fn deliver(
        &self,
        temp: &RelativePath,
        path: &RelativePath,
        prefix: &[u8],
        source: &mut dyn Read,
        fsync: impl FnOnce(&File) -> io::Result<()>,
    ) -> Result<Delivered, CapabilityError> {
        let (temp_parent, temp_name) = temp.split();
        let (path_parent, path_name) = path.split();
        let (temp, path) = (temp.0.as_str(), path.0.as_str());
        let temp_dir = self.subdir(temp_parent).map_err(failed("opening", temp_parent))?;
        let temp_dir = temp_dir.as_ref().unwrap_or(&self.root);
        let path_dir = self.readable_dir(path_parent).map_err(failed("opening", path_parent))?;
        let mut file = open(
            temp_dir,
            Path::new(temp_name),
            OpenOptions::new().write(true).create_new(true),
        )
        .map_err(failed("creating", temp))?;
        let written = (|| {
            let bytes = write_all_from(&mut file, prefix, source).map_err(failed("writing", temp))?;
            fsync(&file).map_err(failed("syncing", temp))?;
            drop(file);
            rename(temp_dir, Path::new(temp_name), &path_dir, Path::new(path_name))
                .map_err(failed("renaming to", path))?;
            Ok(bytes)
        })();
        let bytes = written.inspect_err(|_| {
            let _ = remove_file(temp_dir, Path::new(temp_name));
        })?;
        Ok(Delivered { bytes, dir: path_dir })
    }
}

/// Writes `prefix` and everything `source` yields, in writes of up to
/// [`WRITE_BUFFER`] bytes; the number of bytes written.
fn write_all_from(file: &mut File, prefix: &[u8], source: &mut dyn Read) -> io::Result<u64> {
    let mut buffer = Vec::with_capacity(prefix.len() + FIRST_BUFFER);
    buffer.extend_from_slice(prefix);
    let mut total = 0u64;
    loop {
        let read = Read::take(&mut *source, WRITE_BUFFER as u64).read_to_end(&mut buffer)?;
        file.write_all(&buffer)?;
        total += buffer.len() as u64;
        buffer.clear();
        if read < WRITE_BUFFER {
            return Ok(total);
        }
    }
}

/// A file-system error as a plugin sees it, with what was being done.
fn failed<'a>(what: &'a str, name: &'a str) -> impl FnOnce(io::Error) -> CapabilityError + 'a {
    move |e| match e.kind() {
        io::ErrorKind::NotFound => CapabilityError::NotFound,
        _ => CapabilityError::Backend(format!("{what} {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, DeliveryDir) {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["box/tmp", "box/new"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let delivery = DeliveryDir::open(dir.path()).unwrap();
        (dir, delivery)
    }

    fn sync(file: &File) -> io::Result<()> {
        file.sync_all()
    }

    #[test]
    fn the_directory_handed_back_can_be_fsynced_also_at_the_root() {
        let (dir, d) = root();
        for (temp, path) in [("box/tmp/1", "box/new/1"), ("box/tmp/2", "top")] {
            let delivered = deliver(&d, temp, path, b"x").unwrap();
            delivered.dir.sync_all().unwrap();
        }
        assert!(dir.path().join("top").is_file());
    }

    fn deliver(d: &DeliveryDir, temp: &str, path: &str, body: &[u8]) -> Result<Delivered, CapabilityError> {
        let (temp, path) = (RelativePath::new(temp.into())?, RelativePath::new(path.into())?);
        d.deliver(&temp, &path, b"Prefix: 1\r\n", &mut &body[..], sync)
    }

    #[test]
    fn the_file_is_written_whole_under_its_final_name() {
        let (dir, d) = root();
        let body = vec![b'x'; 200 * 1024];
        let delivered = deliver(&d, "box/tmp/1", "box/new/1", &body).unwrap();
        let stored = std::fs::read(dir.path().join("box/new/1")).unwrap();
        assert_eq!(&stored[..11], b"Prefix: 1\r\n");
        assert_eq!(&stored[11..], &body[..]);
        assert_eq!(delivered.bytes, stored.len() as u64);
        assert!(!dir.path().join("box/tmp/1").exists());
        use std::os::unix::fs::MetadataExt;
        let new = std::fs::metadata(dir.path().join("box/new")).unwrap();
        assert_eq!(
            delivered.dir.metadata().unwrap().ino(),
            new.ino(),
            "the directory to sync"
        );
    }

    #[test]
    fn a_missing_directory_is_not_found_and_leaves_nothing() {
        let (dir, d) = root();
        assert_eq!(
            deliver(&d, "other/tmp/1", "other/new/1", b"x").err(),
            Some(CapabilityError::NotFound)
        );
        assert_eq!(
            deliver(&d, "box/tmp/1", "box/cur/x/1", b"x").err(),
            Some(CapabilityError::NotFound)
        );
        assert_eq!(std::fs::read_dir(dir.path().join("box/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_rename_removes_the_temporary_file() {
        let (dir, d) = root();
        std::fs::create_dir(dir.path().join("box/new/taken")).unwrap();
        std::fs::write(dir.path().join("box/new/taken/f"), b"").unwrap();
        assert!(matches!(
            deliver(&d, "box/tmp/1", "box/new/taken", b"x"),
            Err(CapabilityError::Backend(_))
        ));
        assert_eq!(std::fs::read_dir(dir.path().join("box/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn an_existing_temporary_file_is_not_overwritten() {
        let (dir, d) = root();
        std::fs::write(dir.path().join("box/tmp/1"), b"someone else's").unwrap();
        assert!(matches!(
            deliver(&d, "box/tmp/1", "box/new/1", b"x"),
            Err(CapabilityError::Backend(_))
        ));
        assert_eq!(std::fs::read(dir.path().join("box/tmp/1")).unwrap(), b"someone else's");
    }

    #[test]
    fn paths_cannot_leave_the_directory() {
        let (dir, d) = root();
        for bad in [
            "",
            "/etc/x",
            "../x",
            "box/../../x",
            "box//new/1",
            "box/./1",
            "box/new/",
            "a\nb",
        ] {
            assert!(
                matches!(deliver(&d, "box/tmp/1", bad, b"x"), Err(CapabilityError::Invalid(_))),
                "{bad:?}"
            );
            assert!(
                matches!(deliver(&d, bad, "box/new/1", b"x"), Err(CapabilityError::Invalid(_))),
                "{bad:?}"
            );
        }
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("box/away")).unwrap();
        assert!(deliver(&d, "box/tmp/1", "box/away/1", b"x").is_err());
        assert!(deliver(&d, "box/away/1", "box/new/1", b"x").is_err());
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written through the link"
        );
    }

    #[test]
    fn make_dirs_creates_what_is_missing_and_syncs_each_new_entrys_parent() {
        let (dir, d) = root();
        let synced = std::cell::RefCell::new(Vec::new());
        let record = |f: &File| {
            use std::os::unix::fs::MetadataExt;
            synced.borrow_mut().push(f.metadata()?.ino());
            Ok(())
        };
        d.make_dirs(&RelativePath::new("box/q/2026/12".into()).unwrap(), record)
            .unwrap();
        assert!(dir.path().join("box/q/2026/12").is_dir());
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().ino();
        assert_eq!(
            *synced.borrow(),
            [ino("box"), ino("box/q"), ino("box/q/2026")],
            "box existed"
        );
        synced.borrow_mut().clear();
        d.make_dirs(&RelativePath::new("box/q/2026/12".into()).unwrap(), record)
            .unwrap();
        assert!(synced.borrow().is_empty(), "nothing new, nothing synced");
        std::fs::write(dir.path().join("file"), b"").unwrap();
        assert!(matches!(
            d.make_dirs(&RelativePath::new("file/x".into()).unwrap(), record),
            Err(CapabilityError::Backend(_))
        ));
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("away")).unwrap();
        assert!(
            d.make_dirs(&RelativePath::new("away/x".into()).unwrap(), record)
                .is_err()
        );
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing made through the link"
        );
    }

    #[test]
    fn a_failed_fsync_is_an_error_and_no_file_is_delivered() {
        let (dir, d) = root();
        let failing = |_: &File| Err(io::Error::from_raw_os_error(5));
        let (temp, path) = (
            RelativePath::new("box/tmp/1".into()).unwrap(),
            RelativePath::new("box/new/1".into()).unwrap(),
        );
        let result = d.deliver(&temp, &path, b"", &mut &b"x"[..], failing);
        assert!(matches!(result, Err(CapabilityError::Backend(m)) if m.contains("syncing")));
        assert!(!dir.path().join("box/new/1").exists());
        assert!(!dir.path().join("box/tmp/1").exists());
    }
}
