//! `waraka plugin new`: a self-contained, buildable plugin skeleton (source,
//! README, doc, config stub, a copy of the SDK and the WIT), like `haraka -p`,
//! in Rust, JavaScript, Python or C; and `waraka plugin build`, which runs the
//! language's build for such a directory. One module per language, each with
//! the same two entry points: `files` (the skeleton) and `build`.

mod c;
mod js;
mod python;
mod rust;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A language a plugin skeleton can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Rust, with a copy of the `waraka-plugin` crate.
    Rust,
    /// JavaScript, through componentize-js.
    Js,
    /// Python, through `componentize-py`.
    Python,
    /// C, with clang and bindings the server generates.
    C,
}

impl std::str::FromStr for Lang {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Lang> {
        match s {
            "rust" => Ok(Lang::Rust),
            "js" | "javascript" => Ok(Lang::Js),
            "python" => Ok(Lang::Python),
            "c" => Ok(Lang::C),
            other => bail!("--lang {other}: skeletons exist for rust, js, python and c"),
        }
    }
}

impl Lang {
    const ALL: [Lang; 4] = [Lang::Rust, Lang::Js, Lang::Python, Lang::C];

    /// The file whose presence marks a plugin directory as this language's.
    fn marker(self) -> &'static str {
        match self {
            Lang::Rust => "Cargo.toml",
            Lang::Js => "app.js",
            Lang::Python => "app.py",
            Lang::C => "app.c",
        }
    }

    /// The language of the plugin in `dir`, by its marker file.
    fn of_dir(dir: &Path) -> Option<Lang> {
        Lang::ALL.into_iter().find(|lang| dir.join(lang.marker()).exists())
    }
}

/// The WIT package, carried by every skeleton: the only contract.
const WIT_FILES: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("hooks.wit", include_str!("../../../wit/hooks.wit")),
    ("host.wit", include_str!("../../../wit/host.wit")),
    ("capabilities.wit", include_str!("../../../wit/capabilities.wit")),
    ("outbound.wit", include_str!("../../../wit/outbound.wit")),
];

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs a toolchain command in `dir`, failing with what to install when the
/// program is missing and with its status when it fails.
fn run(command: &mut Command, dir: &Path) -> Result<()> {
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .current_dir(dir)
        .status()
        .with_context(|| format!("running {program} (is it installed? see the README)"))?;
    if !status.success() {
        bail!("{program} failed ({status})");
    }
    Ok(())
}

/// The last part of a plugin name: the skeleton's directory name.
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().expect("rsplit yields at least one part")
}

/// Where the JS, Python and C builds write the component: `DIR/<dir name>.wasm`.
pub fn component_path(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().and_then(|n| n.to_str()).context("directory name")?;
    Ok(dir.join(format!("{name}.wasm")))
}

/// Writes the skeleton's README: what the plugin is `made_with`, the `build`
/// steps, how to check and install the `component` file, and where the hook
/// `api` is.
fn write_readme(root: &Path, name: &str, made_with: &str, build: &str, component: &str, api: &str) -> Result<()> {
    write(
        &root.join("README.md"),
        &format!(
            r#"# {name}

A Waraka plugin written in {made_with}

## Build

{build}

Check it and install it:

    waraka plugin check {component}
    cp {component} INSTANCE/plugins/{name}.wasm

Add `"{name}"` to the `plugins` list in `INSTANCE/waraka.toml` to place it in
the chain, and put its configuration in `INSTANCE/config/{name}.*` (see
`config/`). The WIT in `wit/` is the whole contract between the plugin and
the server. {api}
"#
        ),
    )
}

/// Runs a componentizer (`program ARGS -o DIR/<dir name>.wasm`) in `dir` and
/// returns the component's path.
fn componentize(dir: &Path, program: &str, args: &[&str]) -> Result<PathBuf> {
    let output = component_path(dir)?;
    run(Command::new(program).args(args).arg("-o").arg(&output), dir)?;
    Ok(output)
}

/// Writes the skeleton of plugin `name` in `lang` into `dir/<last part of
/// name>` and returns that path.
pub fn new_plugin(dir: &Path, name: &str, lang: Lang) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && name.split('/').all(|p| !p.is_empty() && !p.starts_with('.'))
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if !valid {
        bail!("plugin name {name:?}: use letters, digits, '.', '_', '-' and '/' (e.g. rcpt_to.my_check)");
    }
    let root = dir.join(base_name(name));
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    match lang {
        Lang::Rust => rust::files(&root, name)?,
        Lang::Js => js::files(&root, name)?,
        Lang::Python => python::files(&root, name)?,
        Lang::C => c::files(&root, name)?,
    }
    write(
        &root.join(format!("docs/{name}.md")),
        &format!("# {name}\n\nWhat it does, which hooks it uses, and its configuration (`config/{name}.list`).\n"),
    )?;
    write(
        &root.join(format!("config/{name}.list")),
        "# Recipients this plugin refuses, one address per line.\n",
    )?;
    for (file, text) in WIT_FILES {
        write(&root.join("wit").join(file), text)?;
    }
    Ok(root)
}

/// The code of a Haraka plugin of one's own.
pub enum HarakaCode<'a> {
    /// `plugins/NAME.js`: its text.
    File(&'a str),
    /// `plugins/NAME/`: its `.js` and `.json` files (paths relative to the
    /// directory, with `/`) and the one `package.json` names as `main`.
    Package {
        /// (path, text) of each file.
        files: &'a [(String, String)],
        /// The path of the main module among `files`.
        main: &'a str,
    },
}

/// Lays out a Haraka plugin's code as the JavaScript plugin `name` in
/// `dir/<last part of name>`, run by `haraka.js`, and returns that path:
/// the skeleton of `new_plugin` with the code in its `app.js` (a plugin in
/// several files as CommonJS modules there).
pub fn port_haraka_plugin(dir: &Path, name: &str, code: HarakaCode) -> Result<PathBuf> {
    let root = new_plugin(dir, name, Lang::Js)?;
    std::fs::remove_file(root.join(format!("config/{name}.list")))?;
    let (app, source) = match code {
        HarakaCode::File(text) => (js::haraka_app(name, text), format!("plugins/{name}.js")),
        HarakaCode::Package { files, main } => (js::haraka_package_app(name, files, main)?, format!("plugins/{name}/")),
    };
    write(&root.join("app.js"), &app)?;
    write(
        &root.join(format!("docs/{name}.md")),
        &format!("# {name}\n\nHaraka's `{source}`, run by `haraka.js` (docs/plugins-in-js.md#haraka-plugins).\n"),
    )?;
    Ok(root)
}

/// Builds the plugin in `dir` with its language's toolchain and returns the
/// component's path. The language is told by the marker file: `Cargo.toml`
/// (Rust, built by cargo), `app.js` (componentize-js), `app.py`
/// (componentize-py) or `app.c` (clang, then componentised here).
pub fn build_plugin(dir: &Path) -> Result<PathBuf> {
    let dir = dir.canonicalize().with_context(|| format!("{}", dir.display()))?;
    match Lang::of_dir(&dir) {
        Some(Lang::Rust) => rust::build(&dir),
        Some(Lang::Js) => js::build(&dir),
        Some(Lang::Python) => python::build(&dir),
        Some(Lang::C) => c::build(&dir),
        None => bail!("{}: no Cargo.toml, app.js, app.py or app.c to build", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_haraka_plugin_is_laid_out_with_its_code_as_app_js() {
        let dir = tempfile::tempdir().unwrap();
        let code = "exports.hook_rcpt = function (next) { next(); };\n";
        let root = port_haraka_plugin(dir.path(), "rcpt_to.mine", HarakaCode::File(code)).unwrap();
        let app = std::fs::read_to_string(root.join("app.js")).unwrap();
        assert!(app.contains("import { haraka } from './haraka.js';"));
        assert!(app.contains(code.trim_end()));
        assert!(app.ends_with("export const hooks = haraka('rcpt_to.mine', module.exports);\n"));
        assert!(root.join("haraka.js").exists() && root.join("wit/world.wit").exists());
        assert!(!root.join("config/rcpt_to.mine.list").exists());
    }

    #[test]
    fn a_haraka_plugin_in_several_files_is_laid_out_as_commonjs_modules() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "index.js".to_string(),
                "const list = require('./lib/list');\nexports.hook_rcpt = list.check;\n".to_string(),
            ),
            (
                "lib/list.js".to_string(),
                "exports.check = function (next) { next(); };\n".to_string(),
            ),
            ("data.json".to_string(), "{\"a\": 1}\n".to_string()),
        ];
        let code = HarakaCode::Package {
            files: &files,
            main: "index.js",
        };
        let root = port_haraka_plugin(dir.path(), "rcpt_to.mine", code).unwrap();
        let app = std::fs::read_to_string(root.join("app.js")).unwrap();
        assert!(app.contains("import { commonjs, haraka } from './haraka.js';"));
        assert!(app.contains("\"lib/list.js\"(module, exports, require, __filename, __dirname) {\n"));
        assert!(app.contains("module.exports = {\"a\": 1};"));
        assert!(app.ends_with("export const hooks = haraka('rcpt_to.mine', commonjs(modules, \"index.js\"));\n"));
        let missing = HarakaCode::Package {
            files: &files,
            main: "main.js",
        };
        assert!(port_haraka_plugin(dir.path(), "rcpt_to.other", missing).is_err());
    }

    #[test]
    fn the_skeleton_carries_every_wit_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let mut carried: Vec<String> = WIT_FILES.iter().map(|(name, _)| name.to_string()).collect();
        carried.sort();
        assert_eq!(carried, on_disk);
    }

    #[test]
    fn a_skeleton_is_recognised_by_its_marker_file() {
        let tmp = tempfile::tempdir().unwrap();
        for lang in Lang::ALL {
            let root = new_plugin(tmp.path(), &format!("rcpt_to.{lang:?}"), lang).unwrap();
            assert_eq!(Lang::of_dir(&root), Some(lang));
        }
    }
}
