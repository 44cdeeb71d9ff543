//! JavaScript plugins: `app.js`, an ES module exporting `hooks`, built into a
//! component by componentize-js (which carries the StarlingMonkey engine).

use super::{base_name, componentize, write, write_readme};
use anyhow::Result;
use std::path::{Path, PathBuf};

const JS_SDK: &str = include_str!("../../../sdk/js/waraka.js");
/// Haraka's plugin API over the SDK, for porting Haraka plugins.
const HARAKA_SHIM: &str = include_str!("../../../sdk/js/haraka.js");

/// Writes the JavaScript skeleton: `app.js` and copies of the SDK modules.
pub(super) fn files(root: &Path, name: &str) -> Result<()> {
    write(
        &root.join("app.js"),
        &format!(
            r#"// `{name}`: describe what this plugin decides.

import {{ config, cont, deny, info, plugin }} from './waraka.js';

// Define the hooks you need; the host calls no others.
export const hooks = plugin({{
  name: '{name}',
  version: '0.1.0',

  rcpt(recipient) {{
    // Lines of config/{name}.list, if the instance has one.
    let blocked = [];
    try {{
      blocked = config.lines('{name}.list');
    }} catch (e) {{
      info(`{name}.list unreadable: ${{e.payload?.tag ?? e}}`);
    }}
    const address = `${{recipient.localPart}}@${{recipient.domain}}`.toLowerCase();
    if (blocked.some((b) => b.toLowerCase() === address)) {{
      info(`refusing ${{address}}`);
      return deny('Recipient refused by policy', 550, '5.7.1');
    }}
    return cont;
  }},
}});
"#
        ),
    )?;
    write(&root.join("waraka.js"), JS_SDK)?;
    write(&root.join("haraka.js"), HARAKA_SHIM)?;
    let file_name = format!("{}.wasm", base_name(name));
    let build = format!(
        "    npm install -g @bytecodealliance/componentize-js@0.23.0   # once
    waraka plugin build .                       # or, by hand (inbound hooks only):
    componentize-js app.js --wit wit --world-name plugin -d http fetch-event -o {file_name}"
    );
    write_readme(
        root,
        name,
        "JavaScript, built into a WebAssembly component\nwith componentize-js.",
        &build,
        &file_name,
        "The hook API is `waraka.js`; `haraka.js`\nruns a Haraka plugin's code (see its first lines). The\ncomponent is about 14 MB (it carries a JavaScript engine); the server\ncompiles it once and caches the result.",
    )
}

/// The `app.js` that runs a Haraka plugin in several files through
/// `haraka.js`: each `.js` file (path, text) a CommonJS module function of
/// `modules`, each `.json` one a module exporting its value, and the hooks
/// those of `main`'s `module.exports`.
pub(super) fn haraka_package_app(name: &str, files: &[(String, String)], main: &str) -> Result<String> {
    if !files.iter().any(|(path, _)| path == main) {
        anyhow::bail!("its main module {main} is not among its files");
    }
    let mut app = format!(
        "// `{name}`: Haraka's plugins/{name}/ ({} files), run by haraka.js (see its first lines):\n\
         // each file a CommonJS module, `require('./…')` between them.\n\
         import {{ commonjs, haraka }} from './haraka.js';\n\nconst modules = {{\n",
        files.len()
    );
    for (path, text) in files {
        let key = serde_json::to_string(path)?;
        if path.ends_with(".json") {
            app.push_str(&format!(
                "  {key}(module) {{\n    module.exports = {};\n  }},\n",
                text.trim()
            ));
        } else {
            app.push_str(&format!(
                "  {key}(module, exports, require, __filename, __dirname) {{\n{}\n  }},\n",
                text.trim_end()
            ));
        }
    }
    app.push_str(&format!(
        "}};\n\nexport const hooks = haraka('{name}', commonjs(modules, {}));\n",
        serde_json::to_string(main)?
    ));
    Ok(app)
}

/// The `app.js` that runs a Haraka plugin's `code` through `haraka.js`: the
/// code as it is, between an import line and an export line.
pub(super) fn haraka_app(name: &str, code: &str) -> String {
    format!(
        "// `{name}`: Haraka's plugins/{name}.js, run by haraka.js (see its first lines).\n\
         import {{ haraka }} from './haraka.js';\n\n{code}\n\
         export const hooks = haraka('{name}', module.exports);\n",
        code = code.trim_end()
    )
}

/// The module componentize-js builds from: `app.js`'s `hooks`, and the
/// outbound hooks the SDK's `plugin()` keeps in `hooks.outbound` (or an
/// `outboundHooks` of app.js's own), defaults when there are none.
const ENTRY: &str = "// Written by `waraka plugin build`: the component's exports, from app.js.
import * as app from '../app.js';

export const hooks = app.hooks;
export const outboundHooks = app.outboundHooks ?? app.hooks?.outbound ?? {
  sendEmail: () => ({ tag: 'deliver' }),
  getMx: () => undefined,
  deferred: () => undefined,
  bounce: () => false,
  delivered: () => undefined,
};
";

/// Runs componentize-js on `app.js` (through `build/entry.js`) against the
/// `outbound-plugin` world, giving `DIR/<dir name>.wasm`. HTTP and the fetch
/// event are left out: the plugin world does not import them.
pub(super) fn build(dir: &Path) -> Result<PathBuf> {
    write(&dir.join("build/entry.js"), ENTRY)?;
    let args = [
        "build/entry.js",
        "--wit",
        "wit",
        "--world-name",
        "outbound-plugin",
        "-d",
        "http",
        "fetch-event",
    ];
    componentize(dir, "componentize-js", &args)
}
