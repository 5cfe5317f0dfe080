//! Helpers for the tests of Cortex crates (feature `test-util`; meant as a
//! dev-dependency feature, never needed by library code).

pub mod spans;
