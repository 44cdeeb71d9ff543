//! Builds the test fixture plugins (tests/fixtures) for the end-to-end tests.

use std::path::PathBuf;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let built = waraka_guest_build::build_guests(&here.join("fixtures"));
    waraka_guest_build::write_embedded_list(&built, "FIXTURES", &out.join("fixtures.rs"));
}
