//! One integration-test binary (so the burn and polars stacks link once),
//! a module per capability.

mod bad_input;
mod checkpoint;
mod common;
mod config;
mod decisions;
mod experiment;
mod fuzz;
mod holdout;
mod layout;
mod model;
mod parity;
mod pipeline;
mod policy;
mod real_data;
mod resume;
mod serve;
mod serve_findings;
mod stream;
mod synth;
