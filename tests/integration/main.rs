//! Integration tests of the `slmpack` binary: one test binary, one module per area. Each test
//! works in its own temporary folder and generates its fixtures.

mod bench;
mod manifest;
