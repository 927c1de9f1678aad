//! Measuring a model: [`metrics`] (AUC, calibration error, log loss, plan
//! accuracy, streamed over batches) and the [`report`] that `upsell eval`
//! writes (Markdown, HTML and SVG charts).

pub mod metrics;
#[cfg(feature = "data")]
pub mod report;
