//! `queue/discard`: accepts every message and drops it (for tests and benchmarks).

use waraka_plugin::{Hook, Plugin, Verdict};

struct Discard;

impl Plugin for Discard {
    const NAME: &'static str = "queue/discard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        Verdict::ok_with("Message discarded")
    }
}

waraka_plugin::export!(Discard);
