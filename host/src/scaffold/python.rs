//! Python plugins: `app.py` with a `Hooks` class, built into a component
//! by componentize-py (which carries CPython).

use super::{base_name, component_path, install_text, run, write};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

const PYTHON_SDK: &str = include_str!("../../../sdk/python/waraka_plugin.py");

/// Writes the Python skeleton: `app.py` and a copy of the SDK module.
pub(super) fn files(root: &Path, name: &str) -> Result<()> {
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
    let file_name = format!("{}.wasm", base_name(name));
    let install = install_text(name, &file_name);
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

{install}

The hook API is `waraka_plugin.py`. The component is about 18 MB (it
carries CPython); the server compiles it once and caches the result.
"#
        ),
    )?;
    Ok(())
}

/// Runs componentize-py on `app.py`, giving `DIR/<dir name>.wasm`.
pub(super) fn build(dir: &Path) -> Result<PathBuf> {
    let output = component_path(dir)?;
    let mut componentize = Command::new("componentize-py");
    componentize
        .args(["-d", "wit", "-w", "plugin", "componentize", "app", "-o"])
        .arg(&output);
    run(&mut componentize, dir)?;
    Ok(output)
}
