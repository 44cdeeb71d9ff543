//! Host bindings generated from `wit/` (the `plugin` world).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});

pub use waraka::plugin::types;
