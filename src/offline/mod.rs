//! Offline jobs that run a checkpoint's [`Scorer`](crate::scoring::Scorer)
//! over files: [`score`] writes probabilities, [`recommend`] decisions,
//! [`eval`] held-out metrics (and, with [`truth`], decision quality against a
//! synthetic world's ground truth), [`ope`] off-policy estimates of a
//! policy's value from logged exposures.

pub mod eval;
pub mod ope;
pub mod recommend;
pub mod score;
pub mod truth;
pub mod uplift;
