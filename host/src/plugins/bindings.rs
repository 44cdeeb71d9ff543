//! Host bindings generated from `wit/`: the `plugin` world (imports and the
//! inbound hooks) and the outbound hooks a component may export beside them.
//! Capability imports that wait on the network are async.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "waraka:plugin/kv": async,
        "waraka:plugin/dns": async,
        "waraka:plugin/blobstore": async,
        "waraka:plugin/files": async,
        "waraka:plugin/sql": async,
        "waraka:plugin/forward": async,
        "waraka:plugin/outbound-queue": async,
        "waraka:plugin/authentication": async,
        "waraka:plugin/dkim": async,
        "waraka:plugin/antivirus": async,
        "waraka:plugin/spamfilter": async,
        "waraka:plugin/sasl": async,
        "waraka:plugin/milter": async,
        "waraka:plugin/ldap": async,
        "waraka:plugin/http": async,
        "waraka:plugin/geoip": async,
        "waraka:plugin/imap": async,
        "waraka:plugin/p0f": async,
        "waraka:plugin/mime": async,
    },
    exports: { default: async },
});

pub use self::waraka::plugin::types;

/// The `outbound-hooks` export, looked up in components that have it.
pub mod outbound {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "outbound-exports",
        exports: { default: async },
    });

    pub use self::exports::waraka::plugin::outbound_hooks::{Delivery, NextHop, RecipientFailure, SendDecision};
}
