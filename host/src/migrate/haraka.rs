//! Reading a Haraka install directory the way `haraka-config` does: single
//! values, lists and INI files from its `config/`, with the dialect's `;`
//! and `#` comments, `key[]=` arrays and bare keys (an INI line without
//! `=`, such as an address in `[ip_whitelist]`). Every INI key a
//! translation reads is marked used, so what no translation read can be
//! reported.

use anyhow::{Result, bail};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// A Haraka install directory (the one `haraka -i` made and `haraka -c` runs).
pub struct HarakaDir {
    root: PathBuf,
    inis: RefCell<BTreeMap<String, Rc<Ini>>>,
}

impl HarakaDir {
    /// Opens `root`, which must hold Haraka's `config/` (with `smtp.ini` or
    /// `plugins`); `root` may also be that `config/` directory itself.
    pub fn open(root: &Path) -> Result<HarakaDir> {
        let looks_like_config = |dir: &Path| dir.join("smtp.ini").is_file() || dir.join("plugins").is_file();
        let root = if looks_like_config(&root.join("config")) {
            root.to_path_buf()
        } else if looks_like_config(root) && root.file_name().is_some_and(|n| n == "config") {
            root.parent().unwrap_or(root).to_path_buf()
        } else {
            bail!(
                "{} is not a Haraka install directory (no config/smtp.ini or config/plugins)",
                root.display()
            );
        };
        Ok(HarakaDir {
            root,
            inis: RefCell::default(),
        })
    }

    /// The path of `name` in Haraka's `config/`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join("config").join(name)
    }

    /// The path of `name` in the install directory (e.g. `plugins/x.js`).
    pub fn install_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The lines of `name` without comment and blank lines, trimmed (Haraka's
    /// `list` type); empty when the file is missing.
    pub fn list(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with(';'))
            .map(str::to_string)
            .collect()
    }

    /// The first line of `name` that is not a comment (Haraka's `value` type).
    pub fn value(&self, name: &str) -> Option<String> {
        self.list(name).into_iter().next()
    }

    /// The INI file `name` (empty when missing), read once.
    pub fn ini(&self, name: &str) -> Rc<Ini> {
        let mut inis = self.inis.borrow_mut();
        inis.entry(name.to_string())
            .or_insert_with(|| {
                Rc::new(Ini::parse(
                    &std::fs::read_to_string(self.path(name)).unwrap_or_default(),
                ))
            })
            .clone()
    }

    /// Every INI file read so far, by name, with the settings that no
    /// translation read (empty values left out: `haraka -i` writes some).
    pub fn unread(&self) -> Vec<(String, Vec<Entry>)> {
        self.inis
            .borrow()
            .iter()
            .map(|(name, ini)| (name.clone(), ini.unread()))
            .filter(|(_, entries)| !entries.is_empty())
            .collect()
    }
}

/// One `key = value` line of an INI file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The section it is in (`main` before the first header).
    pub section: String,
    /// The key, without a trailing `[]`.
    pub key: String,
    /// The value, trimmed (empty for a bare key).
    pub value: String,
    /// A line without `=` (a list item, such as an address).
    pub bare: bool,
}

/// An INI file in haraka-config's dialect.
#[derive(Debug, Default)]
pub struct Ini {
    entries: Vec<Entry>,
    read: RefCell<BTreeSet<(String, String)>>,
}

impl Ini {
    /// Parses `text`: `[section]` headers, `key=value` and `key[]=value`
    /// lines, bare keys, and `;`/`#` comment lines.
    pub fn parse(text: &str) -> Ini {
        let mut section = "main".to_string();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_string();
                continue;
            }
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            let key = key.trim();
            entries.push(Entry {
                section: section.clone(),
                key: key.strip_suffix("[]").unwrap_or(key).trim_end().to_string(),
                value: value.trim().to_string(),
                bare: !line.contains('='),
            });
        }
        Ini {
            entries,
            read: RefCell::default(),
        }
    }

    fn mark(&self, section: &str, key: &str) {
        self.read.borrow_mut().insert((section.to_string(), key.to_string()));
    }

    /// The value of `key` in `section` (the last one, as haraka-config keeps).
    pub fn get(&self, section: &str, key: &str) -> Option<String> {
        self.mark(section, key);
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
            .map(|e| e.value.clone())
    }

    /// The values of `key` in `section`: each `key[]=` line, or the items of
    /// one comma-separated `key=` line.
    pub fn array(&self, section: &str, key: &str) -> Vec<String> {
        self.mark(section, key);
        self.entries
            .iter()
            .filter(|e| e.section == section && e.key == key)
            .flat_map(|e| e.value.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `key` in `section` as haraka-config reads a boolean (true, yes, ok,
    /// enabled, on, 1; anything else is false); `None` when missing.
    pub fn bool(&self, section: &str, key: &str) -> Option<bool> {
        self.get(section, key).map(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "true" | "yes" | "ok" | "enabled" | "on" | "1"
            )
        })
    }

    /// `key` in `section` as a whole number; `None` when missing or not one.
    pub fn number(&self, section: &str, key: &str) -> Option<i64> {
        self.get(section, key).and_then(|v| v.parse().ok())
    }

    /// Every entry of `section`, all marked read.
    pub fn section(&self, section: &str) -> Vec<Entry> {
        let entries: Vec<Entry> = self.entries.iter().filter(|e| e.section == section).cloned().collect();
        for entry in &entries {
            self.mark(&entry.section, &entry.key);
        }
        entries
    }

    /// The names of the sections, in file order, `main` left out.
    pub fn sections(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for entry in &self.entries {
            if entry.section != "main" && !names.contains(&entry.section) {
                names.push(entry.section.clone());
            }
        }
        names
    }

    /// The entries that say something (a value, or a bare key) and that
    /// nothing asked for.
    fn unread(&self) -> Vec<Entry> {
        let read = self.read.borrow();
        self.entries
            .iter()
            .filter(|e| !e.value.is_empty() || e.bare)
            .filter(|e| !read.contains(&(e.section.clone(), e.key.clone())))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Ini;

    #[test]
    fn reads_harakas_dialect() {
        let ini = Ini::parse(
            "; a comment\nhost=10.0.0.1\n# another\nzones[]=a.example\nzones[]=b.example\n\
             [ip_whitelist]\n127.0.0.1\n[period]\nblack = 850\nflag=Enabled\n",
        );
        assert_eq!(ini.get("main", "host").as_deref(), Some("10.0.0.1"));
        assert_eq!(ini.array("main", "zones"), ["a.example", "b.example"]);
        assert_eq!(ini.number("period", "black"), Some(850));
        assert_eq!(ini.bool("period", "flag"), Some(true));
        assert_eq!(ini.sections(), ["ip_whitelist", "period"]);
        assert_eq!(ini.section("ip_whitelist")[0].key, "127.0.0.1");
        assert!(ini.unread().is_empty(), "{:?}", ini.unread());
    }

    #[test]
    fn tells_what_nobody_read() {
        let ini = Ini::parse("host=a\nport=25\nempty=\n[tls]\nrejectUnauthorized=false\n");
        ini.get("main", "host");
        let unread: Vec<String> = ini
            .unread()
            .iter()
            .map(|e| format!("{}.{}", e.section, e.key))
            .collect();
        assert_eq!(unread, ["main.port", "tls.rejectUnauthorized"]);
    }
}
