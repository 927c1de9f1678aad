//! Running many experiments: [`sweep`]s of `upsell train` over a grid,
//! [`tracking`] in MLflow, and the throughput benchmarks ([`bench`](mod@bench)).

#[cfg(feature = "train")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod sweep;
#[cfg(feature = "train")]
pub mod tracking;
