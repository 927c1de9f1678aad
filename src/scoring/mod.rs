//! Scoring with a saved checkpoint, without any training dependency: read
//! the [`checkpoint`], turn rows into calibrated probabilities with the
//! [`Scorer`] ([`calibration`] applies what training fitted).

pub mod calibration;
pub mod checkpoint;
mod scorer;

pub use scorer::{ScoreError, Scorer, Scores};
