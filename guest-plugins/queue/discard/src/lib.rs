//! `queue/discard`: accepts every message and drops it (for tests and
//! benchmarks). `config/queue/discard.ini` may set the reply text (`message = ...`).

use waraka_plugin::{Hook, Plugin, Verdict};

struct Discard;

impl Plugin for Discard {
    const NAME: &'static str = "queue/discard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        let text = waraka_plugin::setting("queue/discard.ini", "message");
        Verdict::ok_with(text.as_deref().unwrap_or("Message discarded"))
    }
}

waraka_plugin::export!(Discard);
