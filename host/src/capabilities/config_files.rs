//! Plugin configuration files under an instance's `config/` directory (or
//! embedded in the binary for the default instance).
//!
//! Ownership rule: a file named after a plugin (`NAME` or `NAME.*`, where
//! NAME may contain `/`) belongs to that plugin alone; every other file is
//! shared by all plugins (e.g. `host_list`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where config files come from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// Files under this directory.
    Dir(PathBuf),
    /// Files compiled into the binary (name → text).
    Embedded(Arc<HashMap<String, String>>),
}

/// Why a config file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config name {0:?} is not a plain relative path")]
    BadName(String),
    #[error("config file {0:?} belongs to another plugin")]
    NotOwned(String),
    #[error("reading config file {name:?}: {reason}")]
    Io { name: String, reason: String },
}

/// Read access to config files, with the ownership rule applied.
#[derive(Debug, Clone)]
pub struct ConfigFiles {
    source: ConfigSource,
    plugin_names: Arc<RwLock<Vec<String>>>,
}

/// Largest config file a plugin may read.
const MAX_CONFIG_FILE: u64 = 4 * 1024 * 1024;

fn owner_of<'a>(name: &str, plugins: &'a [String]) -> Option<&'a str> {
    plugins
        .iter()
        .filter(|p| name == p.as_str() || name.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('.')))
        .max_by_key(|p| p.len())
        .map(String::as_str)
}

impl ConfigFiles {
    /// Config files from `source`, owned by the plugins named in `plugin_names`.
    pub fn new(source: ConfigSource, plugin_names: Vec<String>) -> Self {
        ConfigFiles {
            source,
            plugin_names: Arc::new(RwLock::new(plugin_names)),
        }
    }

    /// Replaces the plugin names used for the ownership rule.
    pub fn set_plugin_names(&self, names: Vec<String>) {
        *self.plugin_names.write().expect("plugin names lock") = names;
    }

    /// The text of file `name` as read by `plugin`; `None` when it does not exist.
    pub fn read(&self, plugin: &str, name: &str) -> Result<Option<String>, ConfigError> {
        let path = Path::new(name);
        if name.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(ConfigError::BadName(name.into()));
        }
        {
            let names = self.plugin_names.read().expect("plugin names lock");
            if let Some(owner) = owner_of(name, &names)
                && owner != plugin
            {
                return Err(ConfigError::NotOwned(name.into()));
            }
        }
        let io = |e: std::io::Error| ConfigError::Io {
            name: name.into(),
            reason: e.to_string(),
        };
        match &self.source {
            ConfigSource::Embedded(files) => Ok(files.get(name).cloned()),
            ConfigSource::Dir(dir) => {
                let full = dir.join(path);
                match std::fs::metadata(&full) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io(e)),
                    Ok(m) if m.len() > MAX_CONFIG_FILE => {
                        return Err(ConfigError::Io {
                            name: name.into(),
                            reason: "file too large".into(),
                        });
                    }
                    Ok(_) => {}
                }
                std::fs::read_to_string(&full).map(Some).map_err(io)
            }
        }
    }

    /// The file's lines without blanks and `#` comments, trimmed; empty when missing.
    pub fn lines(&self, plugin: &str, name: &str) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .read(plugin, name)?
            .map(|text| {
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_own_their_files_and_share_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("host_list"), "# local\nexample.com\n\n a.example \n").unwrap();
        std::fs::create_dir(dir.path().join("auth")).unwrap();
        std::fs::write(dir.path().join("auth/flat_file.toml"), "secret").unwrap();
        let files = ConfigFiles::new(
            ConfigSource::Dir(dir.path().into()),
            vec!["auth/flat_file".into(), "rcpt_to.in_host_list".into()],
        );
        assert_eq!(
            files.lines("rcpt_to.in_host_list", "host_list").unwrap(),
            vec!["example.com", "a.example"]
        );
        assert_eq!(
            files.read("auth/flat_file", "auth/flat_file.toml").unwrap().as_deref(),
            Some("secret")
        );
        assert!(matches!(
            files.read("rcpt_to.in_host_list", "auth/flat_file.toml"),
            Err(ConfigError::NotOwned(_))
        ));
        assert!(matches!(files.read("x", "../etc/passwd"), Err(ConfigError::BadName(_))));
        assert!(matches!(files.read("x", "/etc/passwd"), Err(ConfigError::BadName(_))));
        assert_eq!(files.read("x", "missing").unwrap(), None);
    }
}
