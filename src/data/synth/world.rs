//! The world itself: users drawn row by row from their own random streams,
//! what each wants, how likely each offer converts in each context, what a
//! buyer takes, and the logging policy; and the truth of every row. One
//! file: the world's parts read each other's constants and draws, and the
//! truth must follow the same formulas as the log.

use super::params::WorldParams;
use super::schema::*;
use crate::error::DataError;
use crate::{Error, Result};
use chacha20::ChaCha8Rng;
use polars::prelude::{
    Column, DataFrame, Float64Chunked, Int32Chunked, Int64Chunked, IntoColumn, PolarsResult,
    TimeUnit,
};
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Gamma, StandardNormal};
use std::path::PathBuf;

/// Generates rows `[start, start + rows)` of the log with this seed, as
/// `(exposures, truth)` frames in memory. The log is taken to end with these
/// rows: its exposure times run over 28 days up to row `start + rows`. Every
/// other column depends only on the seed and the row index.
pub fn generate(seed: u64, start: u64, rows: usize) -> Result<(DataFrame, DataFrame)> {
    let total = start
        .checked_add(rows as u64)
        .ok_or_else(|| Error::Argument {
            argument: "--rows",
            message: format!("{start}+{rows} overflows"),
        })?;
    generate_part(seed, total, start, rows)
}

/// Generates rows `[start, start + rows)` of a log of `total` rows with this
/// seed, as `(exposures, truth)` frames in memory. The result depends only on
/// `(seed, total, row index)`: concatenating parts gives the whole log.
pub fn generate_part(
    seed: u64,
    total: u64,
    start: u64,
    rows: usize,
) -> Result<(DataFrame, DataFrame)> {
    generate_in(WorldParams::default(), seed, total, start, rows)
}

/// [`generate_part`] in a world with these parameters.
pub fn generate_in(
    params: WorldParams,
    seed: u64,
    total: u64,
    start: u64,
    rows: usize,
) -> Result<(DataFrame, DataFrame)> {
    check_range(total, start, rows)?;
    params.check()?;
    let world = World::new(seed, params);
    world
        .chunk(total, start, rows)
        .frames(&world)
        .map_err(|source| {
            Error::from(DataError::Polars {
                path: PathBuf::from("<synthetic>"),
                source,
            })
        })
}

pub(super) fn check_range(total: u64, start: u64, rows: usize) -> Result<()> {
    match start.checked_add(rows as u64) {
        Some(end) if end <= total && total < u64::MAX => Ok(()),
        _ => Err(Error::Argument {
            argument: "--rows",
            message: format!("rows {start}..{start}+{rows} lie outside a log of {total} rows"),
        }),
    }
}

/// The world behind every log of one seed, for scoring policies against the
/// truth rather than against noisy outcomes.
pub struct Oracle {
    world: World,
}

impl Oracle {
    /// The default world of `seed`.
    pub fn new(seed: u64) -> Oracle {
        Oracle::of(seed, WorldParams::default())
    }

    /// The world of `seed` with these parameters.
    pub fn of(seed: u64, params: WorldParams) -> Oracle {
        Oracle {
            world: World::new(seed, params),
        }
    }

    /// The true P(convert) of the user of row `index` (in any log of this
    /// seed: users depend on the row index only) for each product of
    /// [`PRODUCTS`], offered on `surface` with `message` (indices into
    /// [`SURFACES`] and [`MESSAGES`]).
    ///
    /// # Panics
    ///
    /// If `surface` or `message` is out of range.
    pub fn p_convert(&self, index: u64, surface: usize, message: usize) -> [f64; NP] {
        assert!(surface < SURFACES.len() && message < MESSAGES.len());
        let (user, preference) = self.user(index);
        let organic = self.world.p_organic(&user, &preference);
        let cold = self.world.p_convert(&user, &preference, surface, message);
        cold.map(|cold| p_buy(organic, cold))
    }

    /// The true expected value of offering each product to the user of row
    /// `index` on `surface` with `message`: what a buyer of the offer takes
    /// (the offer with probability [`OFFER_STICKINESS`], else a plan drawn
    /// from the user's affinities), plus what the user would have bought
    /// anyway if the offer does not convert.
    pub fn expected_value(&self, index: u64, surface: usize, message: usize) -> [f64; NP] {
        let (user, preference) = self.user(index);
        let organic = self.world.p_organic(&user, &preference);
        let cold = self.world.p_convert(&user, &preference, surface, message);
        let warm = self
            .world
            .p_convert_in_market(&user, &preference, surface, message);
        let worth = self.world.value_if_converted(&preference);
        let anyway = organic_worth(&preference);
        std::array::from_fn(|k| offer_value(organic, cold[k], warm[k], worth[k], anyway))
    }

    /// The true expected value with no offer: organic purchases alone.
    pub fn no_offer_value(&self, index: u64) -> f64 {
        let (user, preference) = self.user(index);
        self.world.p_organic(&user, &preference) * organic_worth(&preference)
    }

    fn user(&self, index: u64) -> (User, [f64; NP]) {
        let mut rng = ChaCha8Rng::from_seed(self.world.key);
        rng.set_stream(index);
        let user = self.world.user(&mut rng);
        let preference = self.world.preference(&user);
        (user, preference)
    }
}

/// How active a user is, from the observed active days: about 0 on
/// average, 1 per standard deviation.
fn activity(u: &User) -> f64 {
    (f64::from(u.active_days) - 20.0) / 6.0
}

/// P(a purchase) from a user who buys unoffered with `organic` and whom an
/// offer converts with `cold` when they would not have.
fn p_buy(organic: f64, cold: f64) -> f64 {
    organic + (1.0 - organic) * cold
}

/// The expected value of an offer worth `worth` to its buyers, for a user
/// who buys unoffered with `organic` (a plan worth `anyway` on average). The
/// offer converts with `cold` those who would not have bought and with
/// `warm` those who would (they are in the market), and its buyers take it
/// instead of what they would have bought: a cheap offer to an in-market
/// user loses value (cannibalisation).
fn offer_value(organic: f64, cold: f64, warm: f64, worth: f64, anyway: f64) -> f64 {
    organic * (warm * worth + (1.0 - warm) * anyway) + (1.0 - organic) * cold * worth
}

/// The expected price of an organic purchase: a plan drawn from the user's
/// affinities.
fn organic_worth(preference: &[f64; NP]) -> f64 {
    let affinity = softmax(preference);
    (0..NP).map(|k| affinity[k] * PRODUCTS[k].1).sum()
}

pub(super) const NP: usize = PRODUCTS.len();

pub(super) const PREMIUM_INDIVIDUAL: usize = 0;

pub(super) const DUO: usize = 1;

pub(super) const FAMILY: usize = 2;

pub(super) const AUDIOBOOKS: usize = 4;

pub(super) const PODCAST_PLUS: usize = 5;

/// The tier of each product; 0 for add-ons, which any user may buy.
pub(super) const PRODUCT_RANK: [u8; NP] = [2, 3, 4, 1, 0, 0];

/// The tier of each current plan, on the same scale.
pub(super) const CURRENT_RANK: [u8; 5] = [0, 2, 3, 4, 1];

pub(super) const FREE: usize = 0;

pub(super) const CURRENT_STUDENT: usize = 4;

pub(super) const TV: usize = 4;

pub(super) const DISCOUNT: usize = 0;

pub(super) const SOCIAL_PROOF: usize = 2;

pub(super) const PUSH: usize = 2;

pub(super) const EMAIL: usize = 3;

pub(super) const SURFACE_EFFECT: [f64; 4] = [0.0, 0.3, -0.25, -0.55];

pub(super) const MESSAGE_EFFECT: [f64; 3] = [0.15, 0.0, -0.05];

/// Message-by-product interactions (rows: messages, columns: products).
pub(super) const MESSAGE_PRODUCT: [[f64; NP]; 3] = [
    [0.1, 0.2, 0.3, -0.3, 0.0, -0.2],
    [0.0, -0.1, -0.1, 0.0, 0.45, 0.4],
    [0.0, 0.45, 0.4, 0.2, -0.2, -0.1],
];

pub(super) const PUSH_BY_AGE: [f64; 6] = [0.3, 0.2, 0.0, 0.0, -0.2, -0.3];

pub(super) const EMAIL_BY_AGE: [f64; 6] = [-0.4, -0.2, 0.0, 0.1, 0.2, 0.3];

/// Per surface, the log-odds per unit of [`activity`], times
/// `WorldParams::context_by_user`: active users answer in-app surfaces, the
/// others email. An observed feature, so that the best policy from the
/// features knows it.
pub(super) const SURFACE_BY_ACTIVITY: [f64; 4] = [0.0, 0.5, 0.1, -0.5];

/// Social proof by age bucket, times `WorldParams::context_by_user`.
pub(super) const SOCIAL_BY_AGE: [f64; 6] = [0.5, 0.3, 0.0, -0.2, -0.4, -0.5];

/// The organic purchase intent of a user who wants nothing in particular.
pub(super) const ORGANIC_LEVEL: f64 = -4.0;

pub(super) const PLATFORM_EFFECT: [f64; 5] = [0.15, 0.0, -0.1, 0.05, -0.3];

pub(super) const CHANNEL_EFFECT: [f64; 5] = [0.0, -0.2, 0.25, 0.1, 0.0];

pub(super) const STUDENT_BY_AGE: [f64; 6] = [0.35, 0.40, 0.08, 0.02, 0.01, 0.005];

/// Household sizes 1..=6 by age bucket.
pub(super) const HOUSEHOLD_BY_AGE: [[f64; 6]; 6] = [
    [0.03, 0.07, 0.30, 0.33, 0.18, 0.09],
    [0.35, 0.30, 0.15, 0.12, 0.06, 0.02],
    [0.30, 0.36, 0.14, 0.12, 0.05, 0.03],
    [0.15, 0.25, 0.20, 0.25, 0.10, 0.05],
    [0.15, 0.30, 0.20, 0.22, 0.09, 0.04],
    [0.30, 0.50, 0.09, 0.06, 0.03, 0.02],
];

/// The affinity level that `WorldParams::interaction` scales tastes around.
pub(super) const TASTE_LEVEL: f64 = -2.0;

/// The products that `WorldParams::rare_shift` makes rare.
pub(super) const RARE: [usize; 2] = [DUO, AUDIOBOOKS];

/// Audiobook hours the world assumes when they are unknown (null).
pub(super) const UNKNOWN_AUDIOBOOK_HOURS: f64 = 3.0;

/// 10-point Gauss-Hermite nodes and weights (physicists' form, positive
/// half): `E[f(h)]` for `h ~ N(0, s^2)` is `sum w_i f(sqrt(2) s x_i) /
/// sqrt(pi)` over both signs, exact to about 1e-10 for the smooth sigmoid.
pub(super) const HERMITE: [(f64, f64); 5] = [
    (0.342_901_327_223_705, 0.610_862_633_735_325_8),
    (1.036_610_829_789_514, 0.240_138_611_082_314_7),
    (1.756_683_649_299_882, 0.033_874_394_455_481_06),
    (2.532_731_674_232_79, 0.001_343_645_746_781_233),
    (3.436_159_118_837_738, 7.640_432_855_232_62e-6),
];

/// Context combinations, surface outer and message inner (the order of the
/// truth's per-context columns).
pub(super) const CONTEXTS: usize = SURFACES.len() * MESSAGES.len();

/// One user's features (and the hidden traits behind them).
#[derive(Debug, Clone)]
pub(super) struct User {
    country: usize,
    region: usize,
    platform: usize,
    age: usize,
    channel: usize,
    current: usize,
    tenure_months: f64,
    listening_hours: f64,
    active_days: i32,
    skips_per_hour: f64,
    ad_impressions: i32,
    podcast_share: f64,
    audiobook_hours: Option<f64>,
    devices: i32,
    household: i32,
    student: bool,
    price_sensitivity: f64,
    days_since_upsell: Option<f64>,
    engagement: f64,
    hidden: f64,
}

/// One exposure with its truth.
#[derive(Debug, Clone)]
pub(super) struct Row {
    user: User,
    time_ms: i64,
    /// The offer and its context; `None` for a user in the logging
    /// policy's no-offer holdout.
    shown: Option<(usize, usize, usize)>,
    plan: Option<usize>,
    propensity: f64,
    p_convert: [f64; NP],
    p_plan: [f64; NP],
    logging: [f64; NP],
    decisions: Decisions,
}

/// The truth about every decision for one user: what each offer in each
/// context is worth, and what the best policy from the observed features
/// believes it is worth.
#[derive(Debug, Clone)]
pub(super) struct Decisions {
    /// P(convert) given the observed features alone, in the logged context.
    bayes_p_convert: [f64; NP],
    /// Whether the business rules allow offering each product.
    eligible: [bool; NP],
    /// Per context (surface outer, message inner): true P(convert).
    p_convert: [[f64; NP]; CONTEXTS],
    /// Per context: the true expected value of the offer.
    value: [[f64; NP]; CONTEXTS],
    /// Per context: the expected value given the observed features alone.
    bayes_value: [[f64; NP]; CONTEXTS],
    /// P(a purchase) with no offer, true and from the observed features.
    p_none: f64,
    bayes_p_none: f64,
    /// The expected value with no offer, true and from the observed features.
    value_none: f64,
    bayes_value_none: f64,
    /// The logging policy's true expected value for this user (its holdout
    /// included), and the probability that it contacts the user.
    logging_value: f64,
    logging_contact: f64,
}

/// The parameters drawn once from the seed, and the row generator.
pub(super) struct World {
    params: WorldParams,
    /// The ChaCha key every row's stream starts from.
    key: [u8; 32],
    country_cum: Vec<f64>,
    country_effect: Vec<f64>,
    country_price: Vec<f64>,
    country_product: Vec<[f64; NP]>,
    /// Regions of country `c` are `region_start[c]..region_start[c + 1]`.
    region_start: Vec<usize>,
    /// Cumulative frequencies within each country.
    region_cum: Vec<f64>,
    region_names: Vec<String>,
    region_effect: Vec<f64>,
    region_family: Vec<f64>,
    platform_cum: Vec<f64>,
    age_cum: Vec<f64>,
    channel_cum: Vec<f64>,
    surface_cum: Vec<f64>,
    message_cum: Vec<f64>,
    household_cum: Vec<Vec<f64>>,
    tenure: Gamma<f64>,
    gamma2: Gamma<f64>,
    podcast_casual: Beta<f64>,
    podcast_fan: Beta<f64>,
}

pub(super) fn normal(rng: &mut impl Rng) -> f64 {
    StandardNormal.sample(rng)
}

pub(super) fn exponential(rng: &mut impl Rng) -> f64 {
    -(1.0 - rng.random::<f64>()).ln()
}

pub(super) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub(super) fn softmax(x: &[f64; NP]) -> [f64; NP] {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut out = x.map(|v| (v - max).exp());
    let sum: f64 = out.iter().sum();
    for v in &mut out {
        *v /= sum;
    }
    out
}

pub(super) fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let weights: Vec<f64> = weights.into_iter().collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let mut cum: Vec<f64> = weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect();
    if let Some(last) = cum.last_mut() {
        *last = 1.0;
    }
    cum
}

/// The index whose cumulative bucket holds `u` in [0, 1).
pub(super) fn pick(cum: &[f64], u: f64) -> usize {
    cum.partition_point(|&c| c <= u).min(cum.len() - 1)
}

pub(super) fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

impl World {
    pub(super) fn new(seed: u64, params: WorldParams) -> World {
        let key = ChaCha8Rng::seed_from_u64(seed).get_seed();
        let mut rng = ChaCha8Rng::from_seed(key);
        // Rows use streams 0, 1, ...; the world uses the last one.
        rng.set_stream(u64::MAX);

        let countries = COUNTRIES.len();
        let country_weight: Vec<f64> = (0..countries)
            .map(|c| 1.0 / (c as f64 + 1.0).powf(1.1))
            .collect();
        let country_effect = (0..countries).map(|_| 0.3 * normal(&mut rng)).collect();
        let country_price = (0..countries).map(|_| 0.6 * normal(&mut rng)).collect();
        let country_product = (0..countries)
            .map(|_| std::array::from_fn(|_| 0.2 * normal(&mut rng)))
            .collect();

        let sqrt_total: f64 = country_weight.iter().map(|w| w.sqrt()).sum();
        let mut region_start = vec![0];
        let mut region_cum = Vec::new();
        let mut region_names = Vec::new();
        for (c, w) in country_weight.iter().enumerate() {
            let n = 40 + (4200.0 * w.sqrt() / sqrt_total).round() as usize;
            region_cum.extend(cumulative((0..n).map(|j| 1.0 / (j as f64 + 1.0).powf(0.9))));
            region_names.extend((0..n).map(|j| format!("{}-{:04}", COUNTRIES[c], j + 1)));
            region_start.push(region_start[c] + n);
        }
        let regions = region_names.len();
        let sd = params.region_sd;
        let region_effect = (0..regions).map(|_| sd * normal(&mut rng)).collect();
        let region_family = (0..regions)
            .map(|_| sd * 8.0 / 7.0 * normal(&mut rng))
            .collect();

        World {
            params,
            key,
            country_cum: cumulative(country_weight),
            country_effect,
            country_price,
            country_product,
            region_start,
            region_cum,
            region_names,
            region_effect,
            region_family,
            platform_cum: cumulative(PLATFORMS.iter().map(|p| p.1)),
            age_cum: cumulative(AGE_BUCKETS.iter().map(|p| p.1)),
            channel_cum: cumulative(ACQUISITION_CHANNELS.iter().map(|p| p.1)),
            surface_cum: cumulative(SURFACES.iter().map(|p| p.1)),
            message_cum: cumulative(MESSAGES.iter().map(|p| p.1)),
            household_cum: HOUSEHOLD_BY_AGE
                .iter()
                .map(|w| cumulative(w.iter().copied()))
                .collect(),
            tenure: Gamma::new(1.3, 1.0).expect("valid gamma"),
            gamma2: Gamma::new(2.0, 1.0).expect("valid gamma"),
            podcast_casual: Beta::new(1.1, 3.5).expect("valid beta"),
            podcast_fan: Beta::new(5.0, 2.0).expect("valid beta"),
        }
    }

    pub(super) fn user(&self, rng: &mut ChaCha8Rng) -> User {
        let country = pick(&self.country_cum, rng.random());
        let (r0, r1) = (self.region_start[country], self.region_start[country + 1]);
        let region = r0 + pick(&self.region_cum[r0..r1], rng.random());
        let platform = pick(&self.platform_cum, rng.random());
        let age = pick(&self.age_cum, rng.random());
        let channel = pick(&self.channel_cum, rng.random());
        let student = rng.random::<f64>() < STUDENT_BY_AGE[age];
        let household = 1 + pick(&self.household_cum[age], rng.random()) as i32;
        let devices_mean =
            0.35 + 0.45 * (household - 1) as f64 + if platform == TV { 0.6 } else { 0.0 };
        let devices = (1.0 + (exponential(rng) * devices_mean).floor()).min(8.0) as i32;

        let (u, v) = (rng.random::<f64>(), rng.random::<f64>());
        let current = if student && age <= 1 && u < 0.18 {
            CURRENT_STUDENT
        } else {
            let duo = if household == 2 { 0.08 } else { 0.01 };
            let family = if household >= 3 { 0.08 } else { 0.005 };
            if v < 0.11 {
                1
            } else if v < 0.11 + duo {
                2
            } else if v < 0.11 + duo + family {
                3
            } else {
                FREE
            }
        };
        let paid = current != FREE;

        let engagement = normal(rng) + if paid { 0.35 } else { 0.0 };
        let tenure_scale = if paid { 22.0 } else { 11.0 };
        let tenure_months = round_to((self.tenure.sample(rng) * tenure_scale).min(180.0), 1);
        let active_days =
            (28.0 * sigmoid(0.9 + 1.4 * engagement + 0.5 * normal(rng))).round() as i32;
        let daily = (-0.35 + 0.55 * engagement + 0.75 * normal(rng)).exp();
        let listening_hours = round_to((active_days as f64 / 4.0 * daily).min(160.0), 2);
        let skip_scale = if paid { 1.6 } else { 3.2 };
        let skips_per_hour = round_to(self.gamma2.sample(rng) * skip_scale, 2);
        let ad_rate = 7.0 + 7.0 * rng.random::<f64>();
        let ad_impressions = if paid {
            0
        } else {
            (listening_hours * ad_rate).round() as i32
        };
        let fan = 0.07 + if age >= 3 { 0.05 } else { 0.0 };
        let podcast_share = if rng.random::<f64>() < fan {
            self.podcast_fan.sample(rng)
        } else {
            self.podcast_casual.sample(rng)
        };
        let podcast_share = round_to(podcast_share, 3);
        let reader = 0.09 + if age >= 3 { 0.05 } else { 0.0 };
        let (w, x) = (rng.random::<f64>(), rng.random::<f64>());
        let audiobook_true = if w < reader {
            self.gamma2.sample(rng) * 6.0
        } else if x < 0.6 {
            0.0
        } else {
            exponential(rng)
        };
        let audiobook_hours = (rng.random::<f64>() >= 0.15).then(|| round_to(audiobook_true, 1));
        let price_logit = self.country_price[country]
            + if age <= 1 { 0.6 } else { 0.0 }
            + if student { 0.5 } else { 0.0 }
            - if paid { 0.4 } else { 0.0 }
            + 0.9 * normal(rng);
        let price_sensitivity = round_to(sigmoid(price_logit), 3);
        let never = rng.random::<f64>() < 0.2;
        let days = (1.0 + (exponential(rng) * 24.0).floor()).min(365.0);
        let days_since_upsell = (!never).then_some(days);
        let hidden = self.params.hidden_sd * normal(rng);

        User {
            country,
            region,
            platform,
            age,
            channel,
            current,
            tenure_months,
            listening_hours,
            active_days,
            skips_per_hour,
            ad_impressions,
            podcast_share,
            audiobook_hours,
            devices,
            household,
            student,
            price_sensitivity,
            days_since_upsell,
            engagement,
            hidden,
        }
    }

    /// The product-specific part of a user's utility: what they like,
    /// whether they may buy it, and what its price costs them.
    pub(super) fn preference(&self, u: &User) -> [f64; NP] {
        let heavy = sigmoid(2.0 * (u.listening_hours.ln_1p() - 2.3));
        let (hh, dv) = (u.household as f64, u.devices as f64);
        let big_home = sigmoid(1.8 * (hh - 2.5)) * sigmoid(1.3 * (dv - 2.5));
        let tilt = self.region_family[u.region];
        let mut a = [0.0; NP];
        a[PREMIUM_INDIVIDUAL] = -0.6
            + 1.8 * heavy
            + 0.6 * (u.skips_per_hour / 8.0).tanh()
            + 0.5 * (u.ad_impressions as f64 / 120.0).tanh()
            - 0.8 * big_home;
        a[DUO] =
            -2.3 + match u.household {
                1 => -0.6,
                2 => 2.7,
                _ => 0.3,
            } + 0.3 * (dv - 1.0).tanh()
                + if (2..=3).contains(&u.age) { 0.3 } else { 0.0 }
                + 0.5 * tilt;
        a[FAMILY] = -2.7 + 3.8 * big_home + if (3..=4).contains(&u.age) { 0.4 } else { 0.0 } + tilt;
        a[STUDENT] = if u.student {
            [1.1, 1.5, 0.2, -2.0, -2.0, -2.0][u.age]
        } else {
            -4.5
        };
        let audiobook_hours = u.audiobook_hours.unwrap_or(UNKNOWN_AUDIOBOOK_HOURS);
        a[AUDIOBOOKS] = -2.4 + 1.2 * audiobook_hours.ln_1p() + if u.age >= 3 { 0.3 } else { 0.0 };
        a[PODCAST_PLUS] = -2.3 + 4.5 * u.podcast_share.powf(1.5);
        for a in &mut a {
            *a = TASTE_LEVEL + self.params.interaction * (*a - TASTE_LEVEL);
        }
        for k in RARE {
            a[k] -= self.params.rare_shift;
        }

        let current = CURRENT_RANK[u.current];
        for (k, a) in a.iter_mut().enumerate() {
            let rank = PRODUCT_RANK[k];
            if rank == 0 {
                *a += if current > 0 { 0.4 } else { -0.2 };
            } else if rank <= current {
                *a -= 4.0;
            }
            *a -= self.params.price_weight * u.price_sensitivity * PRODUCTS[k].1 / 19.99;
            *a += self.country_product[u.country][k];
        }
        a
    }

    /// The true conversion probability of each product offered to `u` on
    /// `surface` with `message`.
    pub(super) fn p_convert(
        &self,
        u: &User,
        preference: &[f64; NP],
        surface: usize,
        message: usize,
    ) -> [f64; NP] {
        self.logits(u, preference, surface, message).map(sigmoid)
    }

    /// `E[f(h)]` over the unobserved effect `h ~ N(0, hidden_sd^2)`, by
    /// Gauss-Hermite quadrature.
    fn over_hidden(&self, f: impl Fn(f64) -> f64) -> f64 {
        HERMITE
            .iter()
            .map(|&(x, w)| {
                let h = std::f64::consts::SQRT_2 * self.params.hidden_sd * x;
                w * (f(h) + f(-h))
            })
            .sum::<f64>()
            / std::f64::consts::PI.sqrt()
    }

    /// The log-odds of the organic purchase intent (before the
    /// `WorldParams::organic` scale).
    fn organic_logit(&self, u: &User, preference: &[f64; NP]) -> f64 {
        let max = preference.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let wanted = max + preference.iter().map(|a| (a - max).exp()).sum::<f64>().ln();
        ORGANIC_LEVEL + 0.5 * activity(u) + u.hidden + 0.8 * (wanted - TASTE_LEVEL)
    }

    /// P(the user buys with no offer).
    pub(super) fn p_organic(&self, u: &User, preference: &[f64; NP]) -> f64 {
        if self.params.organic == 0.0 {
            return 0.0;
        }
        self.params.organic * sigmoid(self.organic_logit(u, preference))
    }

    /// [`p_convert`](Self::p_convert) for a user who was about to buy anyway.
    pub(super) fn p_convert_in_market(
        &self,
        u: &User,
        preference: &[f64; NP],
        surface: usize,
        message: usize,
    ) -> [f64; NP] {
        self.logits(u, preference, surface, message)
            .map(|l| sigmoid(l + self.params.in_market))
    }

    /// The conversion log-odds of each product offered to `u` on `surface`
    /// with `message`.
    pub(super) fn logits(
        &self,
        u: &User,
        preference: &[f64; NP],
        surface: usize,
        message: usize,
    ) -> [f64; NP] {
        let fatigue = match u.days_since_upsell {
            Some(days) => -1.2 * (-days / 8.0).exp(),
            None => 0.1,
        };
        let mut context = SURFACE_EFFECT[surface]
            + MESSAGE_EFFECT[message]
            + match surface {
                PUSH => PUSH_BY_AGE[u.age],
                EMAIL => EMAIL_BY_AGE[u.age],
                _ => 0.0,
            };
        let by_user = self.params.context_by_user;
        if by_user != 0.0 {
            context += by_user * SURFACE_BY_ACTIVITY[surface] * activity(u)
                + if message == SOCIAL_PROOF {
                    by_user * SOCIAL_BY_AGE[u.age]
                } else {
                    0.0
                };
        }
        let general = self.params.base_logit
            + self.country_effect[u.country]
            + self.region_effect[u.region]
            + 0.25 * u.engagement
            + 0.2 * (u.tenure_months / 24.0).tanh()
            + CHANNEL_EFFECT[u.channel]
            + PLATFORM_EFFECT[u.platform]
            + fatigue
            + u.hidden
            + context;
        let discount = if message == DISCOUNT {
            1.2 * u.price_sensitivity - 0.4
        } else {
            0.0
        };
        std::array::from_fn(|k| {
            general + preference[k] + MESSAGE_PRODUCT[message][k] + discount * PRODUCTS[k].1 / 19.99
        })
    }

    /// The expected price of what a converting user buys when offered each
    /// product: the offer with probability [`OFFER_STICKINESS`], else a plan
    /// drawn from the user's affinities.
    pub(super) fn value_if_converted(&self, preference: &[f64; NP]) -> [f64; NP] {
        let affinity = softmax(preference);
        let drawn: f64 = (0..NP).map(|k| affinity[k] * PRODUCTS[k].1).sum();
        let s = self.params.stickiness;
        std::array::from_fn(|k| s * PRODUCTS[k].1 + (1.0 - s) * drawn)
    }

    /// The business rules of this world (those of [`config`]'s policy): no
    /// product the user already has, `student` only at student ages.
    pub(super) fn eligible(u: &User) -> [bool; NP] {
        std::array::from_fn(|k| {
            PRODUCTS[k].0 != CURRENT_PLANS[u.current]
                && (k != STUDENT || STUDENT_AGES.contains(&u.age))
        })
    }

    /// Every decision's truth for `u`; `logged` is the row's own context.
    /// Every decision's truth for `u`; `logged` is the row's own context
    /// (the one drawn for it, also for a held-out user). `logging` is the
    /// logging policy's offer distribution.
    pub(super) fn decisions(
        &self,
        u: &User,
        preference: &[f64; NP],
        logged: (usize, usize),
        logging: &[f64; NP],
    ) -> Decisions {
        let worth = self.value_if_converted(preference);
        let organic = self.p_organic(u, preference);
        let anyway = organic_worth(preference);
        let organic_logit = self.organic_logit(u, preference) - u.hidden;
        let scale = self.params.organic;
        // Given the observed features alone, the unobserved effect moves the
        // offer's and the organic log-odds together.
        let bayes_organic = |h: f64| scale * sigmoid(organic_logit + h);
        let bayes_p_none = if scale == 0.0 {
            0.0
        } else {
            self.over_hidden(bayes_organic)
        };
        let observed = |surface, message| {
            self.logits(u, preference, surface, message)
                .map(|l| l - u.hidden)
        };
        let bayes_p = |l: f64| {
            if scale == 0.0 {
                self.over_hidden(|h| sigmoid(l + h))
            } else {
                self.over_hidden(|h| p_buy(bayes_organic(h), sigmoid(l + h)))
            }
        };
        let bayes_value = |l: f64, worth: f64| {
            if scale == 0.0 {
                return self.over_hidden(|h| sigmoid(l + h)) * worth;
            }
            self.over_hidden(|h| {
                let (cold, warm) = (sigmoid(l + h), sigmoid(l + self.params.in_market + h));
                offer_value(bayes_organic(h), cold, warm, worth, anyway)
            })
        };
        let mut d = Decisions {
            bayes_p_convert: observed(logged.0, logged.1).map(bayes_p),
            eligible: Self::eligible(u),
            p_convert: [[0.0; NP]; CONTEXTS],
            value: [[0.0; NP]; CONTEXTS],
            bayes_value: [[0.0; NP]; CONTEXTS],
            p_none: organic,
            bayes_p_none,
            value_none: organic * anyway,
            bayes_value_none: bayes_p_none * anyway,
            logging_value: 0.0,
            logging_contact: 1.0 - self.params.holdout,
        };
        let mut logged_value = 0.0;
        for (surface, (_, p_surface)) in SURFACES.iter().enumerate() {
            for (message, (_, p_message)) in MESSAGES.iter().enumerate() {
                let c = surface * MESSAGES.len() + message;
                let cold = self.p_convert(u, preference, surface, message);
                let warm = if scale == 0.0 {
                    cold
                } else {
                    self.p_convert_in_market(u, preference, surface, message)
                };
                d.p_convert[c] = cold.map(|cold| p_buy(organic, cold));
                d.value[c] = std::array::from_fn(|k| {
                    offer_value(organic, cold[k], warm[k], worth[k], anyway)
                });
                let observed = observed(surface, message);
                d.bayes_value[c] = std::array::from_fn(|k| bayes_value(observed[k], worth[k]));
                let chance = p_surface * p_message;
                logged_value += chance * (0..NP).map(|k| logging[k] * d.value[c][k]).sum::<f64>();
            }
        }
        d.logging_value = d.logging_contact * logged_value + self.params.holdout * d.value_none;
        d
    }

    /// The logging policy's offer distribution: a softmax over a noisy
    /// heuristic, mixed with a uniform floor.
    pub(super) fn logging_policy(&self, u: &User, rng: &mut ChaCha8Rng) -> [f64; NP] {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let mut s = [0.0; NP];
        s[PREMIUM_INDIVIDUAL] =
            0.7 * flag(u.current == FREE) + 0.15 * u.listening_hours.ln_1p() - 0.2;
        s[DUO] = 0.9 * flag(u.household == 2) - 0.4;
        s[FAMILY] = 0.5 * flag(u.household >= 4) + 0.3 * flag(u.devices >= 3) - 0.4;
        s[STUDENT] = 1.3 * flag(u.student) - 0.9;
        s[AUDIOBOOKS] = 0.35 * u.audiobook_hours.unwrap_or(0.0).ln_1p() - 0.5;
        s[PODCAST_PLUS] = 1.5 * u.podcast_share - 0.4;
        for k in RARE {
            s[k] -= self.params.rare_shift;
        }
        let current = CURRENT_RANK[u.current];
        for (k, s) in s.iter_mut().enumerate() {
            let rank = PRODUCT_RANK[k];
            if rank != 0 && rank <= current {
                *s -= 1.5;
            }
            *s += 0.6 * normal(rng);
        }
        softmax(&s).map(|p| (1.0 - LOGGING_EPSILON) * p + LOGGING_EPSILON / NP as f64)
    }

    /// Row `index` of a log of `total` rows.
    pub(super) fn row(&self, index: u64, total: u64) -> Row {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(index);
        let user = self.user(&mut rng);

        let slot = |i: u64| (u128::from(i) * SPAN_MS as u128 / u128::from(total)) as i64;
        let (lo, hi) = (slot(index), slot(index + 1));
        let time_ms = START_MS + lo + ((hi - lo) as f64 * rng.random::<f64>()) as i64;

        let logging = self.logging_policy(&user, &mut rng);
        let offer = pick(&cumulative(logging), rng.random());
        let surface = pick(&self.surface_cum, rng.random());
        let message = pick(&self.message_cum, rng.random());
        let holdout = self.params.holdout;
        let propensity =
            (1.0 - holdout) * logging[offer] * SURFACES[surface].1 * MESSAGES[message].1;

        let preference = self.preference(&user);
        let offered = self.p_convert(&user, &preference, surface, message);
        let affinity = softmax(&preference);
        let stickiness = self.params.stickiness;
        let mut p_plan = affinity.map(|q| (1.0 - stickiness) * q);
        p_plan[offer] += stickiness;

        let (u, v) = (rng.random::<f64>(), rng.random::<f64>());
        let buys_offer = |p: f64| (u < p).then(|| pick(&cumulative(p_plan), v));
        let organic = self.p_organic(&user, &preference);
        let mut shown = Some((offer, surface, message));
        let mut propensity = propensity;
        let plan = if organic == 0.0 && holdout == 0.0 {
            buys_offer(offered[offer])
        } else {
            // Draws that worlds without organic purchases or a holdout never
            // make come last, so those worlds' logs are unchanged.
            let (held, o, w) = (
                rng.random::<f64>(),
                rng.random::<f64>(),
                rng.random::<f64>(),
            );
            let anyway = (o < organic).then(|| pick(&cumulative(affinity), w));
            if held < holdout {
                shown = None;
                propensity = holdout;
                anyway
            } else {
                let warm = self.p_convert_in_market(&user, &preference, surface, message);
                let p = if anyway.is_some() { warm } else { offered };
                // A buyer of the offer takes it instead.
                buys_offer(p[offer]).or(anyway)
            }
        };
        if shown.is_none() {
            // A held-out buyer takes what they wanted anyway.
            p_plan = affinity;
        } else if organic > 0.0 {
            // What a buyer takes under the logged offer, mixed over whether
            // they were in the market.
            let warm = self.p_convert_in_market(&user, &preference, surface, message)[offer];
            let cold = offered[offer];
            let total = p_buy(organic, cold);
            p_plan = std::array::from_fn(|k| {
                (organic * (warm * p_plan[k] + (1.0 - warm) * affinity[k])
                    + (1.0 - organic) * cold * p_plan[k])
                    / total
            });
        }
        let p_convert = offered.map(|cold| p_buy(organic, cold));
        let decisions = self.decisions(&user, &preference, (surface, message), &logging);
        Row {
            user,
            time_ms,
            shown,
            plan,
            propensity,
            p_convert,
            p_plan,
            logging,
            decisions,
        }
    }

    pub(super) fn chunk(&self, total: u64, start: u64, rows: usize) -> Chunk {
        let mut chunk = Chunk::with_capacity(rows);
        for index in start..start + rows as u64 {
            chunk.push(index, self.row(index, total));
        }
        chunk
    }
}

/// Generated rows, column by column.
#[derive(Default)]
pub(super) struct Chunk {
    pub(super) user_id: Vec<String>,
    pub(super) time: Vec<i64>,
    pub(super) tenure: Vec<f64>,
    pub(super) hours: Vec<f64>,
    pub(super) active_days: Vec<i32>,
    pub(super) skips: Vec<f64>,
    pub(super) ads: Vec<i32>,
    pub(super) podcast_share: Vec<f64>,
    pub(super) audiobook_hours: Vec<Option<f64>>,
    pub(super) devices: Vec<i32>,
    pub(super) household: Vec<i32>,
    pub(super) student: Vec<f64>,
    pub(super) price_sensitivity: Vec<f64>,
    pub(super) days_since: Vec<Option<f64>>,
    pub(super) country: Vec<&'static str>,
    pub(super) platform: Vec<&'static str>,
    pub(super) current_plan: Vec<&'static str>,
    pub(super) age_bucket: Vec<&'static str>,
    pub(super) channel: Vec<&'static str>,
    pub(super) region: Vec<usize>,
    pub(super) offer: Vec<&'static str>,
    pub(super) surface: Vec<Option<&'static str>>,
    pub(super) message: Vec<Option<&'static str>>,
    pub(super) converted: Vec<i32>,
    pub(super) plan: Vec<Option<&'static str>>,
    pub(super) propensity: Vec<f64>,
    pub(super) value: Vec<f64>,
    pub(super) p_convert: [Vec<f64>; NP],
    pub(super) p_plan: [Vec<f64>; NP],
    pub(super) logging: [Vec<f64>; NP],
    pub(super) bayes_p_convert: [Vec<f64>; NP],
    pub(super) eligible: [Vec<f64>; NP],
    /// `[context][product]` columns of [`Decisions`].
    pub(super) context_p_convert: [[Vec<f64>; NP]; CONTEXTS],
    pub(super) context_value: [[Vec<f64>; NP]; CONTEXTS],
    pub(super) context_bayes_value: [[Vec<f64>; NP]; CONTEXTS],
    /// `p_none`, `bayes_p_none`, `value_none`, `bayes_value_none`,
    /// `logging_value`, `logging_contact` of [`Decisions`].
    pub(super) no_offer: [Vec<f64>; 6],
    pub(super) conversions: u64,
}

impl Chunk {
    pub(super) fn with_capacity(rows: usize) -> Chunk {
        let floats = || std::array::from_fn(|_| Vec::with_capacity(rows));
        Chunk {
            user_id: Vec::with_capacity(rows),
            time: Vec::with_capacity(rows),
            p_convert: floats(),
            p_plan: floats(),
            logging: floats(),
            bayes_p_convert: floats(),
            eligible: floats(),
            context_p_convert: std::array::from_fn(|_| floats()),
            context_value: std::array::from_fn(|_| floats()),
            context_bayes_value: std::array::from_fn(|_| floats()),
            no_offer: floats(),
            ..Chunk::default()
        }
    }

    pub(super) fn push(&mut self, index: u64, row: Row) {
        let u = &row.user;
        self.user_id.push(format!("u{index:010}"));
        self.time.push(row.time_ms);
        self.tenure.push(u.tenure_months);
        self.hours.push(u.listening_hours);
        self.active_days.push(u.active_days);
        self.skips.push(u.skips_per_hour);
        self.ads.push(u.ad_impressions);
        self.podcast_share.push(u.podcast_share);
        self.audiobook_hours.push(u.audiobook_hours);
        self.devices.push(u.devices);
        self.household.push(u.household);
        self.student.push(if u.student { 1.0 } else { 0.0 });
        self.price_sensitivity.push(u.price_sensitivity);
        self.days_since.push(u.days_since_upsell);
        self.country.push(COUNTRIES[u.country]);
        self.platform.push(PLATFORMS[u.platform].0);
        self.current_plan.push(CURRENT_PLANS[u.current]);
        self.age_bucket.push(AGE_BUCKETS[u.age].0);
        self.channel.push(ACQUISITION_CHANNELS[u.channel].0);
        self.region.push(u.region);
        self.offer.push(
            row.shown
                .map_or(NO_OFFER, |(offer, _, _)| PRODUCTS[offer].0),
        );
        self.surface
            .push(row.shown.map(|(_, surface, _)| SURFACES[surface].0));
        self.message
            .push(row.shown.map(|(_, _, message)| MESSAGES[message].0));
        self.converted.push(i32::from(row.plan.is_some()));
        self.plan.push(row.plan.map(|p| PRODUCTS[p].0));
        self.propensity.push(row.propensity);
        self.value.push(row.plan.map_or(0.0, |p| PRODUCTS[p].1));
        for k in 0..NP {
            self.p_convert[k].push(row.p_convert[k]);
            self.p_plan[k].push(row.p_plan[k]);
            self.logging[k].push(row.logging[k]);
            let d = &row.decisions;
            self.bayes_p_convert[k].push(d.bayes_p_convert[k]);
            self.eligible[k].push(if d.eligible[k] { 1.0 } else { 0.0 });
            for c in 0..CONTEXTS {
                self.context_p_convert[c][k].push(d.p_convert[c][k]);
                self.context_value[c][k].push(d.value[c][k]);
                self.context_bayes_value[c][k].push(d.bayes_value[c][k]);
            }
        }
        let d = &row.decisions;
        for (column, value) in self.no_offer.iter_mut().zip([
            d.p_none,
            d.bayes_p_none,
            d.value_none,
            d.bayes_value_none,
            d.logging_value,
            d.logging_contact,
        ]) {
            column.push(value);
        }
        self.conversions += u64::from(row.plan.is_some());
    }

    pub(super) fn frames(self, world: &World) -> PolarsResult<(DataFrame, DataFrame)> {
        let height = self.user_id.len();
        let floats =
            |name: &str, v: Vec<f64>| Float64Chunked::from_vec(name.into(), v).into_column();
        let ints = |name: &str, v: Vec<i32>| Int32Chunked::from_vec(name.into(), v).into_column();
        let user_id = Column::new("user_id".into(), self.user_id);
        let regions: Vec<&str> = self
            .region
            .iter()
            .map(|&r| world.region_names[r].as_str())
            .collect();
        let exposures = DataFrame::new(
            height,
            vec![
                user_id.clone(),
                Int64Chunked::from_vec("exposure_time".into(), self.time)
                    .into_datetime(TimeUnit::Milliseconds, None)
                    .into_column(),
                floats("tenure_months", self.tenure),
                floats("listening_hours_7d", self.hours),
                ints("active_days_28d", self.active_days),
                floats("skips_per_hour", self.skips),
                ints("ad_impressions_7d", self.ads),
                floats("podcast_share", self.podcast_share),
                Column::new("audiobook_hours_30d".into(), self.audiobook_hours),
                ints("devices", self.devices),
                ints("household_size", self.household),
                floats("student_signal", self.student),
                floats("price_sensitivity", self.price_sensitivity),
                Column::new("days_since_last_upsell".into(), self.days_since),
                Column::new("country".into(), self.country),
                Column::new("platform".into(), self.platform),
                Column::new("current_plan".into(), self.current_plan),
                Column::new("age_bucket".into(), self.age_bucket),
                Column::new("acquisition_channel".into(), self.channel),
                Column::new("region_id".into(), regions),
                Column::new("offer".into(), self.offer),
                Column::new("surface".into(), self.surface),
                Column::new("message".into(), self.message),
                ints("converted", self.converted),
                Column::new("plan".into(), self.plan),
                floats("propensity", self.propensity),
                floats("value", self.value),
            ],
        )?;
        let mut truth = vec![user_id];
        for (prefix, table) in [
            ("p_convert", self.p_convert),
            ("p_plan", self.p_plan),
            ("logging_p", self.logging),
            ("bayes_p_convert", self.bayes_p_convert),
            ("eligible", self.eligible),
        ] {
            for (k, values) in table.into_iter().enumerate() {
                truth.push(floats(&format!("{prefix}__{}", PRODUCTS[k].0), values));
            }
        }
        for (prefix, tables) in [
            ("p_convert", self.context_p_convert),
            ("value", self.context_value),
            ("bayes_value", self.context_bayes_value),
        ] {
            for (c, table) in tables.into_iter().enumerate() {
                let (surface, message) = (c / MESSAGES.len(), c % MESSAGES.len());
                for (k, values) in table.into_iter().enumerate() {
                    let name = format!(
                        "{prefix}__{}__{}__{}",
                        PRODUCTS[k].0, SURFACES[surface].0, MESSAGES[message].0
                    );
                    truth.push(floats(&name, values));
                }
            }
        }
        for (name, values) in [
            "p_convert__none",
            "bayes_p_convert__none",
            "value__none",
            "bayes_value__none",
            "logging_value",
            "logging_contact",
        ]
        .into_iter()
        .zip(self.no_offer)
        {
            truth.push(floats(name, values));
        }
        let truth = DataFrame::new(height, truth)?;
        Ok((exposures, truth))
    }
}
