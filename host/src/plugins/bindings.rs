//! Host bindings generated from `wit/` (the `plugin` world).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});

pub use self::waraka::plugin::types;
