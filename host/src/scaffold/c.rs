//! C plugins: `app.c` against the `waraka.h` SDK. The build does what
//! `wit-bindgen c`, clang and `wasm-tools component new` would do, with only
//! clang outside the server: the bindings for the plugin world (with the
//! outbound hooks) are generated here (wit-bindgen's C generator), clang
//! compiles a WASI reactor module, and the module is made a component here
//! (wit-component, with the WASI preview 1 adapter that wasmtime ships).

use super::{base_name, component_path, run, write, write_readme};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use wit_bindgen_core::wit_parser::Resolve;

const SDK_HEADER: &str = include_str!("../../../sdk/c/waraka.h");
const SDK_SOURCE: &str = include_str!("../../../sdk/c/waraka.c");

/// Writes the C skeleton: `app.c` and a copy of the SDK.
pub(super) fn files(root: &Path, name: &str) -> Result<()> {
    write(
        &root.join("app.c"),
        &format!(
            r#"// `{name}`: describe what this plugin decides.

#include "waraka.h"

#include <strings.h>

// Define the hooks you need (the `waraka_hook_*` functions of waraka.h); the
// host calls no others.
void waraka_hook_rcpt(const waraka_address_t *recipient, waraka_verdict_t *verdict) {{
    waraka_lines_t blocked;
    // Lines of config/{name}.list, if the instance has one.
    if (!waraka_config_lines("{name}.list", &blocked)) {{
        waraka_denysoft(verdict, 451, "4.3.0", "configuration unavailable");
        return;
    }}
    char *address = waraka_address_string(recipient);
    for (size_t i = 0; i < blocked.len; i++) {{
        if (strcasecmp(blocked.ptr[i], address) == 0) {{
            waraka_info("refusing %s", address);
            waraka_deny(verdict, 550, "5.7.1", "Recipient refused by policy");
            break;
        }}
    }}
    free(address);
    waraka_lines_free(&blocked);
}}

WARAKA_PLUGIN("{name}", "0.1.0")
"#
        ),
    )?;
    write(&root.join("waraka.h"), SDK_HEADER)?;
    write(&root.join("waraka.c"), SDK_SOURCE)?;
    let file_name = format!("{}.wasm", base_name(name));
    let build = format!(
        "    apt-get install clang lld wasi-libc libclang-rt-dev-wasm32   # once (Debian)
    waraka plugin build .

`waraka plugin build` generates the WIT bindings into `build/`, compiles
`app.c`, `waraka.c` and the bindings with clang (`WASI_CC` and
`WASI_SYSROOT` override `clang` and `/usr`; `WASI_CFLAGS` adds flags, such
as `-g` for file and line numbers in trap backtraces), and turns the module
into the component `{file_name}`."
    );
    write_readme(
        root,
        name,
        "C, built with clang for `wasm32-wasi`.",
        &build,
        &file_name,
        "The hook API is `waraka.h`; the\ngenerated `build/plugin.h` has every WIT function and type.",
    )
}

/// Generates the bindings, compiles with clang and componentises, giving
/// `DIR/<dir name>.wasm`.
pub(super) fn build(dir: &Path) -> Result<PathBuf> {
    let generated = dir.join("build");
    std::fs::create_dir_all(&generated)?;
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(dir.join("wit")).context("reading wit/")?;
    // Every C plugin is built against `outbound-plugin` (the SDK answers the
    // outbound hooks a plugin does not define, and `describe` lists only the
    // defined ones); the generated names stay those of `plugin`.
    let world = resolve.select_world(&[package], Some("outbound-plugin"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts {
        rename_world: Some("plugin".into()),
        ..Default::default()
    }
    .build()
    .generate(&mut resolve, world, &mut files)?;
    for (name, contents) in files.iter() {
        std::fs::write(generated.join(name), contents)?;
    }
    let module = generated.join("core.wasm");
    let sysroot = std::env::var("WASI_SYSROOT").unwrap_or_else(|_| "/usr".into());
    let mut clang = Command::new(std::env::var("WASI_CC").unwrap_or_else(|_| "clang".into()));
    clang
        .args([
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
            "-O2",
            "-Wall",
            "-Ibuild",
        ])
        .arg(format!("--sysroot={sysroot}"))
        .args(std::env::var("WASI_CFLAGS").unwrap_or_default().split_whitespace())
        .arg("-o")
        .arg(&module)
        .args(["app.c", "waraka.c", "build/plugin.c", "build/plugin_component_type.o"]);
    run(&mut clang, dir)?;
    let component = wit_component::ComponentEncoder::default()
        .module(&std::fs::read(&module)?)?
        .validate(true)
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
        .context("making the module a component")?;
    let output = component_path(dir)?;
    std::fs::write(&output, component)?;
    Ok(output)
}
