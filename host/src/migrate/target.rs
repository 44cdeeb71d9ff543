//! The instance an import writes: `waraka.toml` edited with `toml_edit` (so
//! its comments stay), config files edited line by line the same way, and
//! the report of what was done.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml_edit::{DocumentMut, Item, Table, Value};

/// What an import did, for the administrator to read.
#[derive(Debug, Default)]
pub struct Report {
    /// Settings and plugins carried over, each with where it went.
    pub carried: Vec<String>,
    /// What has a counterpart in Waraka that the import could not fill in,
    /// or that behaves differently: to look at by hand.
    pub review: Vec<String>,
    /// What Waraka does not need (it does the job itself, or differently).
    pub not_needed: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("Carried over", &self.carried),
            ("To look at by hand", &self.review),
            ("Not needed in Waraka", &self.not_needed),
        ];
        for (title, lines) in parts.into_iter().filter(|(_, lines)| !lines.is_empty()) {
            writeln!(f, "{title}:")?;
            for line in lines {
                writeln!(f, "  - {line}")?;
            }
        }
        Ok(())
    }
}

/// A freshly laid-out instance being filled in.
pub struct Target {
    root: PathBuf,
    toml: DocumentMut,
    /// Config files edited so far (relative to `config/`), with their text.
    files: BTreeMap<String, String>,
    /// What was done.
    pub report: Report,
}

impl Target {
    /// The instance laid out in `root`.
    pub fn open(root: &Path) -> Result<Target> {
        let text = std::fs::read_to_string(root.join(crate::config::CONFIG_FILE))?;
        Ok(Target {
            root: root.to_path_buf(),
            toml: text.parse().context("the new waraka.toml")?,
            files: BTreeMap::new(),
            report: Report::default(),
        })
    }

    /// The path of `relative` in the instance.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The table at `path` of `waraka.toml` (`["plugin", "queue/lmtp"]`),
    /// made when missing.
    pub fn table(&mut self, path: &[&str]) -> &mut Table {
        let mut table = self.toml.as_table_mut();
        for name in path {
            let item = table.entry(name).or_insert_with(|| {
                let mut new = Table::new();
                new.set_implicit(true);
                Item::Table(new)
            });
            table = item.as_table_mut().expect("waraka.toml's tables are tables");
        }
        table
    }

    /// Sets `key` of the table at `path` of `waraka.toml`.
    pub fn set(&mut self, path: &[&str], key: &str, value: impl Into<Value>) {
        let table = self.table(path);
        table.set_implicit(false);
        table[key] = toml_edit::value(value);
    }

    /// Sets `key` of the `waraka.toml` table at `path` from Haraka's
    /// `source`, and reports it as carried.
    pub fn carry_toml(&mut self, source: &str, path: &[&str], key: &str, value: impl Into<Value>) {
        let value = value.into();
        let shown = value.to_string();
        self.set(path, key, value);
        self.report
            .carried
            .push(format!("{source}: [{}] {key} = {}", path.join("."), shown.trim()));
    }

    /// Sets `key = value` in the config file `file` (see [`Target::setting`])
    /// from Haraka's `source`, and reports it as carried.
    pub fn carry_setting(&mut self, source: &str, file: &str, key: &str, value: &str) {
        self.setting(file, key, value);
        self.report
            .carried
            .push(format!("{source}: config/{file} {key} = {value}"));
    }

    /// Adds a `[[NAME]]` table in the table at `path` of `waraka.toml`
    /// (`&[]`, `"listener"`: a `[[listener]]`; `&["tls"]`, `"sni"`: a
    /// `[[tls.sni]]`).
    pub fn push(&mut self, path: &[&str], name: &str, table: Table) {
        let array = self.table(path)[name].or_insert(Item::ArrayOfTables(Default::default()));
        if let Some(array) = array.as_array_of_tables_mut() {
            array.push(table);
        }
    }

    /// Writes `bytes` to `relative` in the instance, readable by its owner
    /// only (keys and the certificates beside them).
    pub fn write_private(&self, relative: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join(relative);
        std::fs::create_dir_all(path.parent().expect("a file in the instance"))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(bytes))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Adds `grant` to the grants of the plugin `plugin`.
    pub fn grant(&mut self, plugin: &str, grant: &str) {
        let table = self.table(&["plugin", plugin]);
        table.set_implicit(false);
        let grants = table["grants"].or_insert(toml_edit::value(toml_edit::Array::new()));
        if let Some(array) = grants.as_array_mut()
            && !array.iter().any(|g| g.as_str() == Some(grant))
        {
            array.push(grant);
        }
    }

    fn config_text(&mut self, file: &str) -> &mut String {
        let path = self.root.join("config").join(file);
        self.files
            .entry(file.to_string())
            .or_insert_with(|| std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Sets `key = value` in the top part (before any section) of the
    /// config file `file`: on its line, or on the commented-out example of
    /// it (`# key = ...`), else as a new line above the first section.
    pub fn setting(&mut self, file: &str, key: &str, value: &str) {
        let text = self.config_text(file);
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let top = lines
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .unwrap_or(lines.len());
        let names_key = |line: &str, commented: bool| {
            let line = line.trim_start();
            let line = if commented {
                match line.strip_prefix('#') {
                    Some(rest) => rest.trim_start(),
                    None => return false,
                }
            } else {
                line
            };
            line.split_once('=').is_some_and(|(k, _)| k.trim() == key)
        };
        let found = (0..top)
            .find(|&i| names_key(&lines[i], false))
            .or_else(|| (0..top).find(|&i| names_key(&lines[i], true)));
        let line = format!("{key} = {value}");
        match found {
            Some(i) => lines[i] = line,
            None => lines.insert(top, line),
        }
        *text = lines.join("\n") + "\n";
    }

    /// Appends a `[section]` with `entries` to the config file `file`.
    pub fn section(&mut self, file: &str, section: &str, entries: &[(&str, String)]) {
        let text = self.config_text(file);
        text.push_str(&format!("\n[{section}]\n"));
        for (key, value) in entries {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }

    /// Replaces the config file `file` with `text`.
    pub fn write_config(&mut self, file: &str, text: String) {
        *self.config_text(file) = text;
    }

    /// Copies `from` to `relative` in the instance, keeping its permissions.
    pub fn copy(&self, from: &Path, relative: &str) -> Result<()> {
        let to = self.root.join(relative);
        std::fs::create_dir_all(to.parent().expect("a file in the instance"))?;
        std::fs::copy(from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    }

    /// Writes `waraka.toml` and the edited config files.
    pub fn save(&self) -> Result<()> {
        std::fs::write(self.root.join(crate::config::CONFIG_FILE), self.toml.to_string())?;
        for (file, text) in &self.files {
            let path = self.root.join("config").join(file);
            std::fs::create_dir_all(path.parent().expect("a file in config/"))?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Target;
    use toml_edit::DocumentMut;

    fn target(config: &str) -> Target {
        Target {
            root: "/nonexistent".into(),
            toml: "# top\n[smtp]\nlisten = [\"127.0.0.1:2525\"]  # kept comment\n"
                .parse::<DocumentMut>()
                .unwrap(),
            files: [("x.ini".to_string(), config.to_string())].into(),
            report: Default::default(),
        }
    }

    #[test]
    fn settings_take_the_place_of_their_examples() {
        let mut t = target("# x\nreject = true\n# max_size = 10\n[example.org]\nmax_size = 1\n");
        t.setting("x.ini", "max_size", "500");
        t.setting("x.ini", "reject", "false");
        t.setting("x.ini", "new", "1");
        assert_eq!(
            t.files["x.ini"],
            "# x\nreject = false\nmax_size = 500\nnew = 1\n[example.org]\nmax_size = 1\n"
        );
    }

    #[test]
    fn toml_edits_keep_comments() {
        let mut t = target("");
        t.set(&["smtp"], "hostname", "mx.example.com");
        t.set(&["plugin", "queue/lmtp"], "timeout", "10s");
        t.grant("queue/lmtp", "socket:/run/lmtp");
        let text = t.toml.to_string();
        assert!(text.contains("# kept comment"), "{text}");
        assert!(text.contains("hostname = \"mx.example.com\""), "{text}");
        assert!(text.contains("[plugin.\"queue/lmtp\"]"), "{text}");
        assert!(text.contains("grants = [\"socket:/run/lmtp\"]"), "{text}");
    }
}
