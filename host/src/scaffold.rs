//! `waraka plugin new`: a self-contained, buildable plugin skeleton (source,
//! README, doc, config stub, a copy of the SDK and the WIT), like `haraka -p`,
//! in Rust or Python; and `waraka plugin build`, which runs the language's
//! build for such a directory.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A language a plugin skeleton can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
}

impl std::str::FromStr for Lang {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Lang> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" => Ok(Lang::Python),
            other => bail!("--lang {other}: skeletons exist for rust and python"),
        }
    }
}

const PYTHON_SDK: &str = include_str!("../../sdk/python/waraka_plugin.py");

const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../guest-plugins/sdk/src/lib.rs")),
    ("src/hook.rs", include_str!("../../guest-plugins/sdk/src/hook.rs")),
    ("src/verdict.rs", include_str!("../../guest-plugins/sdk/src/verdict.rs")),
    (
        "src/host_list.rs",
        include_str!("../../guest-plugins/sdk/src/host_list.rs"),
    ),
];

const WIT_FILES: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../wit/world.wit")),
    ("types.wit", include_str!("../../wit/types.wit")),
    ("hooks.wit", include_str!("../../wit/hooks.wit")),
    ("host.wit", include_str!("../../wit/host.wit")),
    ("capabilities.wit", include_str!("../../wit/capabilities.wit")),
    ("outbound.wit", include_str!("../../wit/outbound.wit")),
];

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The cargo package name for a plugin name (`rcpt_to.my_check` → `rcpt-to-my-check`).
fn package_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
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
    let root = dir.join(name.rsplit('/').next().expect("non-empty"));
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    match lang {
        Lang::Rust => rust_files(&root, name)?,
        Lang::Python => python_files(&root, name)?,
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

fn rust_files(root: &Path, name: &str) -> Result<()> {
    let package = package_name(name);
    write(
        &root.join("Cargo.toml"),
        &format!(
            r#"[package]
name = "{package}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
waraka-plugin = {{ path = "waraka-plugin" }}

[profile.release]
opt-level = "s"
lto = true
strip = "debuginfo"

[workspace]
"#
        ),
    )?;
    write(
        &root.join("src/lib.rs"),
        &format!(
            r#"//! `{name}`: describe what this plugin decides.

use waraka_plugin::{{Address, Hook, Plugin, Verdict}};

struct ThisPlugin;

impl Plugin for ThisPlugin {{
    const NAME: &'static str = "{name}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    // List every hook you implement; the host calls no others.
    const HOOKS: &'static [Hook] = &[Hook::Rcpt];

    fn rcpt(recipient: Address) -> Verdict {{
        // Lines of config/{name}.list, if the instance has one.
        let blocked = waraka_plugin::config::lines("{name}.list").unwrap_or_default();
        if blocked.iter().any(|b| b.eq_ignore_ascii_case(&recipient.to_addr_spec())) {{
            waraka_plugin::info!("refusing {{recipient}}");
            return Verdict::deny_code(550, "5.7.1", "Recipient refused by policy");
        }}
        Verdict::Cont
    }}
}}

waraka_plugin::export!(ThisPlugin);
"#
        ),
    )?;
    let file_name = format!("{}.wasm", package.replace('-', "_"));
    write(
        &root.join("README.md"),
        &format!(
            r#"# {name}

A Waraka plugin written in Rust.

## Build

    rustup target add wasm32-wasip2      # once
    cargo build --release --target wasm32-wasip2

The component is `target/wasm32-wasip2/release/{file_name}`. Check it and install it:

    waraka plugin check target/wasm32-wasip2/release/{file_name}
    cp target/wasm32-wasip2/release/{file_name} INSTANCE/plugins/{name}.wasm

Add `"{name}"` to the `plugins` list in `INSTANCE/waraka.toml` to place it in
the chain, and put its configuration in `INSTANCE/config/{name}.*` (see
`config/`). The hook API is documented in `waraka-plugin/src/lib.rs` and the
WIT in `wit/`.
"#
        ),
    )?;
    write(
        &root.join("waraka-plugin/Cargo.toml"),
        "[package]\nname = \"waraka-plugin\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\nwit-bindgen = \"0.61\"\nregex-lite = \"0.1\"\n",
    )?;
    for (file, text) in SDK_FILES {
        write(
            &root.join("waraka-plugin").join(file),
            &text.replace("\"../../wit\"", "\"../wit\""),
        )?;
    }
    Ok(())
}

fn python_files(root: &Path, name: &str) -> Result<()> {
    write(
        &root.join("app.py"),
        &format!(
            r#""""`{name}`: describe what this plugin decides."""

from waraka_plugin import Err, Plugin, config, cont, deny, info


class Hooks(Plugin):
    NAME = "{name}"
    VERSION = "0.1.0"

    # Define the hooks you need; the host calls no others.
    def rcpt(self, recipient):
        # Lines of config/{name}.list, if the instance has one.
        try:
            blocked = config.lines("{name}.list")
        except Err:
            blocked = []
        address = f"{{recipient.local_part}}@{{recipient.domain}}".lower()
        if address in (b.lower() for b in blocked):
            info(f"refusing {{address}}")
            return deny("Recipient refused by policy", code=550, enhanced="5.7.1")
        return cont
"#
        ),
    )?;
    write(&root.join("waraka_plugin.py"), PYTHON_SDK)?;
    let file_name = format!("{}.wasm", name.rsplit('/').next().expect("non-empty"));
    write(
        &root.join("README.md"),
        &format!(
            r#"# {name}

A Waraka plugin written in Python, built into a WebAssembly component with
componentize-py.

## Build

    pip install componentize-py==0.25.1      # once
    waraka plugin build .                     # or, by hand:
    componentize-py -d wit -w plugin componentize app -o {file_name}

Check it and install it:

    waraka plugin check {file_name}
    cp {file_name} INSTANCE/plugins/{name}.wasm

Add `"{name}"` to the `plugins` list in `INSTANCE/waraka.toml` to place it in
the chain, and put its configuration in `INSTANCE/config/{name}.*` (see
`config/`). The hook API is `waraka_plugin.py`; the WIT is in `wit/`. The
component is about 18 MB (it carries CPython); the server compiles it once
and caches the result.
"#
        ),
    )?;
    Ok(())
}

/// Builds the plugin skeleton in `dir` with its language's toolchain and
/// returns the component's path: `cargo` for a Rust plugin (`Cargo.toml`),
/// componentize-py for a Python one (`app.py`, giving `DIR/<dir name>.wasm`).
pub fn build_plugin(dir: &Path) -> Result<PathBuf> {
    let dir = dir.canonicalize().with_context(|| format!("{}", dir.display()))?;
    let (mut command, output) = if dir.join("Cargo.toml").exists() {
        let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml"))?)?;
        let package = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .context("Cargo.toml has no package name")?;
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "--release", "--target", "wasm32-wasip2"]);
        let wasm = format!("{}.wasm", package.replace('-', "_"));
        (cargo, target.join("wasm32-wasip2/release").join(wasm))
    } else if dir.join("app.py").exists() {
        let name = dir.file_name().and_then(|n| n.to_str()).context("directory name")?;
        let output = dir.join(format!("{name}.wasm"));
        let mut componentize = Command::new("componentize-py");
        componentize
            .args(["-d", "wit", "-w", "plugin", "componentize", "app", "-o"])
            .arg(&output);
        (componentize, output)
    } else {
        bail!("{}: no Cargo.toml (Rust) or app.py (Python) to build", dir.display());
    };
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .current_dir(&dir)
        .status()
        .with_context(|| format!("running {program} (is it installed? see the README)"))?;
    if !status.success() {
        bail!("{program} failed ({status})");
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
