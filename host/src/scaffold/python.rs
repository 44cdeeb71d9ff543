//! Python plugins: `app.py` with a `Hooks` class, built into a component
//! by componentize-py (which carries CPython).

use super::{base_name, componentize, write, write_readme};
use anyhow::Result;
use std::path::{Path, PathBuf};

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
    let build = format!(
        "    pip install componentize-py==0.25.1      # once
    waraka plugin build .                     # or, by hand (inbound hooks only):
    componentize-py -d wit -w plugin componentize app -o {file_name}"
    );
    write_readme(
        root,
        name,
        "Python, built into a WebAssembly component with\ncomponentize-py.",
        &build,
        &file_name,
        "The hook API is `waraka_plugin.py`. The\ncomponent is about 18 MB (it carries CPython); the server compiles it once\nand caches the result.",
    )
}

/// The module componentize-py builds from: `app.py`'s `Hooks`, which is
/// also the `OutboundHooks` export (the SDK's `Plugin` has every outbound
/// hook method).
const ENTRY: &str = r#""""Written by `waraka plugin build`: the component's exports, from app.py."""

from app import Hooks

OutboundHooks = Hooks
"#;

/// Runs componentize-py on `app.py` (through `build/waraka_main.py`) against
/// the `outbound-plugin` world, giving `DIR/<dir name>.wasm`.
pub(super) fn build(dir: &Path) -> Result<PathBuf> {
    write(&dir.join("build/waraka_main.py"), ENTRY)?;
    componentize(
        dir,
        "componentize-py",
        &[
            "-d",
            "wit",
            "-w",
            "outbound-plugin",
            "componentize",
            "-p",
            ".",
            "-p",
            "build",
            "waraka_main",
        ],
    )
}
