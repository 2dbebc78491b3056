//! The proxy-wasm build: the contexts Envoy calls (`plugin`) and the `Host`
//! over proxy-wasm's hostcalls (`host`). The only code that knows proxy-wasm.

mod host;
mod plugin;
