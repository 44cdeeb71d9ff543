//! Host bindings generated from `wit/` (the `plugin` world). Capability
//! imports that wait on the network are async.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "waraka:plugin/kv": async,
        "waraka:plugin/dns": async,
        "waraka:plugin/blobstore": async,
        "waraka:plugin/sql": async,
    },
    exports: { default: async },
});

pub use self::waraka::plugin::types;
