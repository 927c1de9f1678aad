//! The network: a shared user encoder with a conversion head and a
//! plan-choice head, in burn alone. [`config`] is its shape (saved in the
//! checkpoint), [`inputs`] turns feature arrays into its input tensors,
//! [`network`] holds the layers, [`few_rows`] is the same forward pass on plain
//! arrays for a few rows, and [`device`] picks where tensors live. Training
//! lives in `train`.

pub mod config;
pub mod device;
#[cfg(feature = "train")]
mod dropout;
pub mod few_rows;
pub mod inputs;
pub mod network;

pub use config::NetworkConfig;
#[cfg(feature = "train")]
pub use dropout::{dropout_position, seed_dropout, set_dropout_position};
pub use inputs::{Inputs, Outputs};
pub use network::{Member, Network};
