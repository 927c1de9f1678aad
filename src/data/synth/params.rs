//! What makes a world hard to decide in: [`WorldParams`], its named presets
//! ([`WORLDS`]) and `--world-set key=value` overrides.

use super::schema::*;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// What makes a world hard to decide in. The default world is `default`;
/// [`WorldParams::preset`] names others, and `upsell synth --world NAME
/// --world-set key=value` changes any field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldParams {
    /// Scale of the user-by-product affinities around a common level: how
    /// much the best product differs between users. Default 1.
    pub interaction: f64,
    /// Standard deviation of an unobserved per-user effect on the
    /// conversion log-odds: what no model of the features can know.
    /// Default 0.35.
    pub hidden_sd: f64,
    /// Probability that a buyer takes the offered product rather than one
    /// drawn from their own affinities. Default 0.7.
    pub stickiness: f64,
    /// Weight of price sensitivity against a product's price, in log-odds
    /// at the dearest price. Default 2.2.
    pub price_weight: f64,
    /// Standard deviation of each region's effect on conversion (its
    /// family/duo tilt is 8/7 of it): how much the high-cardinality id
    /// carries. Default 0.35.
    pub region_sd: f64,
    /// Log-odds taken from `duo` and `audiobooks`, in what users want and in
    /// how often the logging policy offers them: rare products. Default 0.
    pub rare_shift: f64,
    /// Log-odds of converting for an average user on the home banner with
    /// a feature message, before product affinities. Default -2.85.
    pub base_logit: f64,
    /// Scale of organic purchases, in [0, 1]: a user buys with no offer
    /// with probability `organic * sigmoid(intent)`, where the intent grows
    /// with activity (active days), the unobserved effect and how much the user wants
    /// any product. An offer that is taken replaces what the user would
    /// have bought (cannibalisation). Default 0: nothing sells unoffered.
    pub organic: f64,
    /// How much likelier an offer converts a user who was about to buy
    /// anyway, in log-odds: such buyers take the offer instead, so a cheap
    /// offer to them loses value. Default 2.
    pub in_market: f64,
    /// Share of users the logging policy leaves alone at random (a no-offer
    /// holdout), in [0, 1); their rows have the offer `none` and no
    /// context. Default 0.
    pub holdout: f64,
    /// Scale of the surface and message effects that differ by user
    /// (active users answer in-app messages, others email; social proof
    /// works on the young). Default 0: the same for everyone of an age.
    pub context_by_user: f64,
}

impl Default for WorldParams {
    fn default() -> Self {
        WorldParams {
            interaction: 1.0,
            hidden_sd: 0.35,
            stickiness: OFFER_STICKINESS,
            price_weight: 2.2,
            region_sd: 0.35,
            rare_shift: 0.0,
            base_logit: -2.85,
            organic: 0.0,
            in_market: 2.0,
            holdout: 0.0,
            context_by_user: 0.0,
        }
    }
}

/// A bad `--world-set` value.
pub(super) fn setting(message: String) -> Error {
    Error::Argument {
        argument: "--world-set",
        message,
    }
}

/// World parameters as a TOML table, key by key.
pub(super) fn params_table(params: &WorldParams) -> toml::Table {
    match toml::Value::try_from(params) {
        Ok(toml::Value::Table(table)) => table,
        _ => unreachable!("a struct of numbers serialises to a table"),
    }
}

/// The named worlds, each hard in one way (`holdout` in several at once; it
/// is kept out of all tuning). The `incremental` worlds add organic
/// purchases, a no-offer holdout in the log and contexts that suit users
/// differently (`incremental_unseen` is kept out of tuning).
pub const WORLDS: [&str; 10] = [
    "default",
    "weak_interactions",
    "noisy",
    "switchers",
    "rare",
    "regional",
    "price_sensitive",
    "holdout",
    "incremental",
    "incremental_unseen",
];

impl WorldParams {
    /// The parameters of a named world ([`WORLDS`]).
    pub fn preset(name: &str) -> Result<WorldParams> {
        let d = WorldParams::default();
        Ok(match name {
            "default" => d,
            // The best product hardly differs between users.
            "weak_interactions" => WorldParams {
                interaction: 0.4,
                ..d
            },
            // Much of who buys is invisible in the features.
            "noisy" => WorldParams {
                hidden_sd: 1.0,
                ..d
            },
            // Most buyers take a plan other than the one offered.
            "switchers" => WorldParams {
                stickiness: 0.3,
                ..d
            },
            // Two products are rarely wanted and rarely logged.
            "rare" => WorldParams {
                rare_shift: 1.5,
                ..d
            },
            // Regions (a hashed id of ~5,000 values) carry much of the signal.
            "regional" => WorldParams {
                region_sd: 0.9,
                ..d
            },
            // Price decides: cheap products win for most users.
            "price_sensitive" => WorldParams {
                price_weight: 4.0,
                ..d
            },
            "holdout" => WorldParams {
                interaction: 1.3,
                hidden_sd: 0.6,
                stickiness: 0.5,
                price_weight: 3.0,
                region_sd: 0.6,
                rare_shift: 0.8,
                base_logit: -3.1,
                ..d
            },
            // Some users buy anyway (an offer often just moves their
            // purchase), offers convert rarely, and the surface and message
            // that work differ by user; a 10% holdout shows all this.
            "incremental" => WorldParams {
                base_logit: -4.0,
                organic: 0.6,
                in_market: 3.0,
                holdout: 0.1,
                context_by_user: 1.2,
                ..d
            },
            "incremental_unseen" => WorldParams {
                interaction: 1.2,
                hidden_sd: 0.5,
                stickiness: 0.55,
                price_weight: 2.8,
                region_sd: 0.5,
                rare_shift: 0.5,
                base_logit: -4.3,
                organic: 0.8,
                in_market: 2.5,
                holdout: 0.05,
                context_by_user: 1.0,
            },
            _ => {
                return Err(Error::Argument {
                    argument: "--world",
                    message: format!(
                        "unknown world {name:?}; the worlds are {}",
                        WORLDS.join(", ")
                    ),
                });
            }
        })
    }

    /// Applies `key=value` overrides (TOML values) to these parameters.
    pub fn with_overrides(self, overrides: &[String]) -> Result<WorldParams> {
        let mut table = params_table(&self);
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .ok_or_else(|| setting(format!("{o:?} is not key=value")))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .ok_or_else(|| setting(format!("{o:?}: not a number")))?;
            if !table.contains_key(key.trim()) {
                return Err(setting(format!(
                    "unknown setting {:?}; the settings are {}",
                    key.trim(),
                    table.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            table.insert(key.trim().to_string(), value);
        }
        let params: WorldParams = toml::Value::Table(table)
            .try_into()
            .map_err(|e| setting(e.to_string()))?;
        params.check()?;
        Ok(params)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let finite = [
            self.interaction,
            self.hidden_sd,
            self.stickiness,
            self.price_weight,
            self.region_sd,
            self.rare_shift,
            self.base_logit,
            self.organic,
            self.in_market,
            self.holdout,
            self.context_by_user,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite
            || self.hidden_sd < 0.0
            || self.region_sd < 0.0
            || !(0.0..=1.0).contains(&self.stickiness)
            || !(0.0..=1.0).contains(&self.organic)
            || !(0.0..1.0).contains(&self.holdout)
        {
            return Err(setting(format!(
                "out of range (finite numbers; hidden_sd and region_sd >= 0; stickiness and \
                 organic in [0, 1]; holdout in [0, 1)): {self:?}"
            )));
        }
        Ok(())
    }
}
