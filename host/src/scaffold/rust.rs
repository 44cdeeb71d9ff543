//! Rust plugins: a cargo package built for `wasm32-wasip2` against a copy of
//! the `waraka-plugin` SDK crate.

use super::{run, write, write_readme};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../guest-plugins/sdk/src/lib.rs")),
    ("src/hook.rs", include_str!("../../../guest-plugins/sdk/src/hook.rs")),
    (
        "src/verdict.rs",
        include_str!("../../../guest-plugins/sdk/src/verdict.rs"),
    ),
    (
        "src/host_list.rs",
        include_str!("../../../guest-plugins/sdk/src/host_list.rs"),
    ),
    (
        "src/ldap_filter.rs",
        include_str!("../../../guest-plugins/sdk/src/ldap_filter.rs"),
    ),
    (
        "src/auth_results.rs",
        include_str!("../../../guest-plugins/sdk/src/auth_results.rs"),
    ),
    (
        "src/next_hop.rs",
        include_str!("../../../guest-plugins/sdk/src/next_hop.rs"),
    ),
    (
        "src/regexp_table.rs",
        include_str!("../../../guest-plugins/sdk/src/regexp_table.rs"),
    ),
    (
        "src/dns_list.rs",
        include_str!("../../../guest-plugins/sdk/src/dns_list.rs"),
    ),
    (
        "src/subaddress.rs",
        include_str!("../../../guest-plugins/sdk/src/subaddress.rs"),
    ),
    (
        "src/passwords.rs",
        include_str!("../../../guest-plugins/sdk/src/passwords.rs"),
    ),
];

/// The SDK's manifest, and the guest workspace's that it inherits from.
const SDK_MANIFEST: &str = include_str!("../../../guest-plugins/sdk/Cargo.toml");
const GUEST_WORKSPACE: &str = include_str!("../../../guest-plugins/Cargo.toml");

/// The SDK's manifest standing alone: what it inherits from the guest
/// workspace (`version.workspace = true`, `wit-bindgen.workspace = true`)
/// written out, its features and optional dependencies kept.
fn sdk_manifest() -> Result<String> {
    let workspace: toml::Table = toml::from_str(GUEST_WORKSPACE)?;
    let inherited = |section: &str, key: &str| workspace["workspace"].get(section).and_then(|s| s.get(key)).cloned();
    let mut manifest: toml::Table = toml::from_str(SDK_MANIFEST)?;
    if let Some(toml::Value::Table(package)) = manifest.get_mut("package") {
        for (key, value) in package.iter_mut() {
            if value.get("workspace").is_some() {
                *value = inherited("package", key).with_context(|| format!("workspace has no package.{key}"))?;
            }
        }
    }
    if let Some(toml::Value::Table(dependencies)) = manifest.get_mut("dependencies") {
        for (name, value) in dependencies.iter_mut() {
            if let Some(own) = value.as_table().filter(|t| t.contains_key("workspace")).cloned() {
                let mut resolved = match inherited("dependencies", name) {
                    Some(toml::Value::String(version)) => toml::Table::from_iter([("version".into(), version.into())]),
                    Some(toml::Value::Table(table)) => table,
                    _ => anyhow::bail!("workspace has no dependency {name}"),
                };
                resolved.extend(own.into_iter().filter(|(k, _)| k != "workspace"));
                *value = toml::Value::Table(resolved);
            }
        }
    }
    Ok(toml::to_string(&manifest)?)
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

/// Writes the Rust skeleton: a cargo package with a copy of the SDK crate.
pub(super) fn files(root: &Path, name: &str) -> Result<()> {
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
    let component = format!("target/wasm32-wasip2/release/{}.wasm", package.replace('-', "_"));
    write_readme(
        root,
        name,
        "Rust.",
        &format!(
            "    rustup target add wasm32-wasip2      # once
    cargo build --release --target wasm32-wasip2

The component is `{component}` (`waraka plugin build .`
runs the same cargo command)."
        ),
        &component,
        "The hook API is documented\nin `waraka-plugin/src/lib.rs`.",
    )?;
    write(&root.join("waraka-plugin/Cargo.toml"), &sdk_manifest()?)?;
    for (file, text) in SDK_FILES {
        write(
            &root.join("waraka-plugin").join(file),
            &text.replace("\"../../wit\"", "\"../wit\""),
        )?;
    }
    Ok(())
}

/// Runs `cargo build --release --target wasm32-wasip2` in `dir`; the component
/// is named after the package, under `CARGO_TARGET_DIR` or `DIR/target`.
pub(super) fn build(dir: &Path) -> Result<PathBuf> {
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml"))?)?;
    let package = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .context("Cargo.toml has no package name")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["build", "--release", "--target", "wasm32-wasip2"]);
    run(&mut cargo, dir)?;
    let wasm = format!("{}.wasm", package.replace('-', "_"));
    Ok(target.join("wasm32-wasip2/release").join(wasm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_plugin_gets_every_file_of_the_sdk() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-plugins/sdk/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(sdk)
            .unwrap()
            .map(|e| format!("src/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        let mut copied: Vec<String> = SDK_FILES.iter().map(|(name, _)| name.to_string()).collect();
        on_disk.sort();
        copied.sort();
        assert_eq!(copied, on_disk);
    }

    #[test]
    fn the_sdk_manifest_stands_alone_with_its_features() {
        let manifest: toml::Table = toml::from_str(&sdk_manifest().unwrap()).unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("waraka-plugin"));
        assert_eq!(manifest["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(
            manifest["dependencies"]["wit-bindgen"]["version"].as_str(),
            Some("0.61")
        );
        assert_eq!(manifest["dependencies"]["argon2"]["optional"].as_bool(), Some(true));
        assert!(manifest["features"]["passwords"].as_array().is_some());
        assert!(!sdk_manifest().unwrap().contains("workspace"));
    }
}
