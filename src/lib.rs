//! `upsell` decides which paid product to offer each user of a subscription
//! service, and how likely they are to buy it.
//!
//! The modules are layers; each uses only those above it in this list
//! (`tests/layout.rs` checks it):
//!
//! - [`error`], [`atomic`]: the error type and atomic writes;
//! - [`config`]: what the columns mean and how to train and decide;
//! - [`preprocess`]: the fitted transformation of raw columns a checkpoint
//!   carries, applied row by row; [`policy`]: probabilities to offers;
//! - [`model`]: the network, in burn alone;
//! - [`scoring`]: a checkpoint read back and turned into calibrated scores;
//!   [`api`]: the server's request and response bodies (with the layers
//!   above, this is the lean build, `default-features = false`);
//! - `data`: tables and streams with polars, and the synthetic worlds;
//! - `evaluation`: metrics and reports;
//! - `offline`: score, recommend, evaluate and estimate policies over files;
//! - `train`: fitting the network and exporting a checkpoint;
//! - `experiment`: sweeps, tracking and benchmarks; `serve`: the HTTP server.

pub mod api;
pub mod atomic;
pub mod config;
#[cfg(feature = "data")]
pub mod data;
pub mod error;
#[cfg(feature = "data")]
pub mod evaluation;
#[cfg(feature = "data")]
pub mod experiment;
pub mod model;
#[cfg(feature = "data")]
pub mod offline;
pub mod policy;
pub mod preprocess;
pub mod scoring;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "train")]
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
pub use scoring::{Scorer, Scores};
