//! `upsell` decides which paid product to offer each user of a subscription
//! service, and how likely they are to buy it.
//!
//! The modules follow the data: [`config`] says what the columns mean;
//! `data` reads tables and turns columns into arrays; [`preprocess`] holds the
//! fitted transformation a checkpoint carries; [`batch`] turns arrays into
//! tensors; [`model`] is the network; `train` fits it; [`checkpoint`] saves
//! it; [`scorer`] loads it and turns rows into probabilities, calibrated by
//! [`calibrate`].

pub mod atomic;
pub mod batch;
#[cfg(feature = "train")]
pub mod bench;
pub mod calibrate;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "data")]
pub mod data;
pub mod device;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod plain;
pub mod policy;
pub mod preprocess;
#[cfg(feature = "data")]
pub mod report;
#[cfg(feature = "train")]
pub mod resume;
pub mod scorer;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "cli")]
pub mod sweep;
#[cfg(feature = "data")]
pub mod synth;
#[cfg(feature = "train")]
pub mod tracking;
#[cfg(feature = "train")]
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
pub use scorer::{Scorer, Scores};
