//! The `waraka.toml` loader: any text is either a configuration or an error
//! that names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waraka_config::{CONFIG_FILE, parse_config};

fuzz_target!(|text: &str| {
    match parse_config(text) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(error) => assert!(error.to_string().starts_with(CONFIG_FILE)),
    }
});
