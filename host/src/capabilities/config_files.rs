//! Plugin configuration files under an instance's `config/` directory (or
//! embedded in the binary for the default instance).
//!
//! Ownership rule: a file named after a plugin (`NAME` or `NAME.*`, where
//! NAME may contain `/`) belongs to that plugin alone; every other file is
//! shared by all plugins (e.g. `host_list`).
//!
//! Files of a directory are cached after their first read (plugins read them
//! on every call, e.g. `host_list` on every RCPT) and the cache is emptied
//! whenever a watcher sees anything under the directory change, so an edit
//! shows on the next read after the file system reports it (milliseconds).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

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
    /// The name is absolute, or climbs out with `..`.
    BadName(String),
    #[error("config file {0:?} belongs to another plugin")]
    /// The file is another plugin's (named after it).
    NotOwned(String),
    /// The file exists but could not be read.
    #[error("reading config file {name:?}: {reason}")]
    Io {
        /// The name the plugin asked for.
        name: String,
        /// The operating system's error.
        reason: String,
    },
}

/// Read access to config files, with the ownership rule applied.
#[derive(Debug, Clone)]
pub struct ConfigFiles {
    source: ConfigSource,
    plugin_names: Arc<RwLock<Vec<String>>>,
    cache: Option<Arc<FileCache>>,
}

/// Texts read from a watched directory, by name (`None`: no such file),
/// emptied by the watcher it holds on every change under the directory.
struct FileCache {
    state: Arc<Mutex<CacheState>>,
    _watcher: RecommendedWatcher,
}

#[derive(Default)]
struct CacheState {
    files: HashMap<String, Option<String>>,
    /// Bumped on every change, so a read that raced a change is not cached.
    generation: u64,
}

impl CacheState {
    fn clear(&mut self) {
        self.files.clear();
        self.generation += 1;
    }
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache").finish_non_exhaustive()
    }
}

impl FileCache {
    /// A cache of `dir`; `None` when the directory cannot be watched (then
    /// every read goes to the disk).
    fn watching(dir: &Path) -> Option<Arc<FileCache>> {
        let state = Arc::new(Mutex::new(CacheState::default()));
        let changed = Arc::clone(&state);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Err(e) = &event {
                tracing::warn!("config watcher: {e}");
            }
            if !event.is_ok_and(|event| is_read_only(&event.kind)) {
                changed.lock().expect("config cache lock").clear();
            }
        })
        .ok()?;
        watcher.watch(dir, RecursiveMode::Recursive).ok()?;
        Some(Arc::new(FileCache {
            state,
            _watcher: watcher,
        }))
    }

    /// The cached text of `name`, or `read`'s result, cached unless a change
    /// came in while reading.
    fn get_or_read(
        &self,
        name: &str,
        read: impl FnOnce() -> Result<Option<String>, ConfigError>,
    ) -> Result<Option<String>, ConfigError> {
        let generation = {
            let state = self.state.lock().expect("config cache lock");
            if let Some(text) = state.files.get(name) {
                return Ok(text.clone());
            }
            state.generation
        };
        let text = read()?;
        let mut state = self.state.lock().expect("config cache lock");
        if state.generation == generation {
            state.files.insert(name.to_string(), text.clone());
        }
        Ok(text)
    }
}

/// Largest config file a plugin may read.
const MAX_CONFIG_FILE: u64 = 4 * 1024 * 1024;

/// Whether a watcher event only reports an open or a read, which changes
/// nothing (a close after writing does: it ends a write in several steps).
pub fn is_read_only(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read))
    )
}

fn owner_of<'a>(name: &str, plugins: &'a [String]) -> Option<&'a str> {
    plugins
        .iter()
        .filter(|p| name == p.as_str() || name.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('.')))
        .max_by_key(|p| p.len())
        .map(String::as_str)
}

/// The text of the file at `full` (`name` for errors); `None` when missing.
fn read_file(full: &Path, name: &str) -> Result<Option<String>, ConfigError> {
    let io = |e: std::io::Error| ConfigError::Io {
        name: name.into(),
        reason: e.to_string(),
    };
    match std::fs::metadata(full) {
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
    std::fs::read_to_string(full).map(Some).map_err(io)
}

impl ConfigFiles {
    /// Config files from `source`, owned by the plugins named in `plugin_names`.
    pub fn new(source: ConfigSource, plugin_names: Vec<String>) -> Self {
        let cache = match &source {
            ConfigSource::Dir(dir) => FileCache::watching(dir),
            ConfigSource::Embedded(_) => None,
        };
        ConfigFiles {
            source,
            plugin_names: Arc::new(RwLock::new(plugin_names)),
            cache,
        }
    }

    /// Drops every cached text, so the next read of each file goes to the
    /// disk (a reload asked for, where no watcher may have reported yet).
    pub fn forget(&self) {
        if let Some(cache) = &self.cache {
            cache.state.lock().expect("config cache lock").clear();
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
        match &self.source {
            ConfigSource::Embedded(files) => Ok(files.get(name).cloned()),
            ConfigSource::Dir(dir) => match &self.cache {
                Some(cache) => cache.get_or_read(name, || read_file(&dir.join(path), name)),
                None => read_file(&dir.join(path), name),
            },
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

    #[test]
    fn cached_files_are_read_again_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host_list");
        std::fs::write(&file, "one.example\n").unwrap();
        let files = ConfigFiles::new(ConfigSource::Dir(dir.path().into()), vec![]);
        assert_eq!(files.lines("p", "host_list").unwrap(), ["one.example"]);
        let cache = files.cache.as_ref().expect("the directory is watched");
        assert!(cache.state.lock().unwrap().files.contains_key("host_list"), "cached");
        assert_eq!(files.read("p", "later").unwrap(), None);

        std::fs::write(&file, "two.example\n").unwrap();
        std::fs::write(dir.path().join("later"), "now\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while files.lines("p", "host_list").unwrap() != ["two.example"] || files.read("p", "later").unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "the change was never seen");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
