//! Synthetic exposure logs with a known ground truth.
//!
//! A streaming audio service shows upsell offers to its users. Each row of
//! the log is one exposure of a distinct user: the user's features, the offer
//! and its context (surface, message), the probability with which the logging
//! policy chose them, and what happened next. A second table holds the truth
//! the log was drawn from, so that models and policies can be scored against
//! it rather than against noisy outcomes.
//!
//! # The world
//!
//! - **Users.** Country (30 ISO codes, Zipf-like), a region within the country
//!   (about 5,000 in all, each with its own random effect), platform, age,
//!   acquisition channel, household size, devices, an edu-email signal, the
//!   current plan (mostly free), engagement (active days, heavy-tailed
//!   listening hours, skips, ads for free users), podcast share, audiobook
//!   hours (null for 15%: unknown, which the world treats as moderate
//!   interest), price sensitivity and the days since the last upsell (null
//!   for 20%: never shown one).
//! - **What each user wants.** A non-linear affinity per product: family for
//!   large households with many devices, duo for two-person households,
//!   student only with the edu signal at young ages, audiobooks for audiobook
//!   listeners, podcast_plus for a high podcast share, premium_individual for
//!   heavy free listeners who see many ads and skip a lot. A plan at or below
//!   the current plan almost never sells; price sensitivity hurts expensive
//!   products; countries carry a price shift and per-product tastes; regions
//!   carry a base effect and a family/duo tilt.
//! - **Conversion.** `P(convert | user, offer, surface, message)` is a
//!   sigmoid of a base rate, the country and region effects, engagement,
//!   tenure, channel, platform, fatigue from a recent upsell, an unobserved
//!   per-user effect, the surface and message effects (push and email work
//!   differently by age), the product affinity, and message-by-product
//!   interactions (a discount helps price-sensitive users with expensive
//!   products, social proof helps duo and family, a feature message helps
//!   the add-ons).
//! - **Plan choice.** A buyer takes the offered product with probability
//!   [`OFFER_STICKINESS`]; otherwise the plan is drawn from the softmax of the
//!   user's own affinities.
//! - **Logging policy.** A softmax over a noisy, imperfect heuristic score
//!   per product, mixed with a uniform floor ([`LOGGING_EPSILON`]) so every
//!   product has a probability of at least `LOGGING_EPSILON / 6`; surface and
//!   message are drawn independently from [`SURFACES`] and [`MESSAGES`].
//!
//! # Determinism
//!
//! Row `i` is drawn from its own ChaCha8 stream (`seed`, stream `i`), and the
//! world's parameters from a separate stream of the same seed, so a row never
//! depends on chunking, file splitting or threads. The exposure time spreads
//! the whole log over 28 days, so it alone also depends on the log's length:
//! [`generate_part`] takes that length, [`generate`] assumes the log ends
//! with the rows it generates.

mod params;
mod schema;
mod world;
mod writer;

pub use params::{WORLDS, WorldParams};
pub use schema::{
    ACQUISITION_CHANNELS, AGE_BUCKETS, CATEGORICAL_COLUMNS, COUNTRIES, CURRENT_PLANS,
    LOG1P_COLUMNS, LOGGING_EPSILON, MESSAGES, NO_OFFER, NUMERIC_COLUMNS, OFFER_STICKINESS,
    PLATFORMS, PRODUCTS, REGION_BUCKETS, SPAN_MS, START_MS, SURFACES, config,
};
pub use world::{Oracle, generate, generate_in, generate_part};
pub use writer::{
    DEFAULT_CHUNK_ROWS, DEFAULT_ROWS_PER_FILE, SynthOptions, SynthSummary, command, config_for,
    write,
};
