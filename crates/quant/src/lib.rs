//! Block formats and quantizers, byte for byte as ggml defines them.
