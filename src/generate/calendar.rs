//! The business's outbound calendar ([`Plan`]): the marketing campaigns of
//! every week and the names of all campaigns (the cart reminder, the weekly
//! flash sales, the campaigns), drawn once from the seed and shared by all
//! customers.
//!
//! Draws from its own RNG only, so the calendar does not depend on the
//! number of customers.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::sampling::{mix, pick};
use super::{GenConfig, WEEK_MS};
use crate::model::{Channel, DAY_MS, HOUR_MS};

pub(super) struct Campaign {
    pub(super) at: i64,
    pub(super) channel: Channel,
    pub(super) reach: f64,
    /// 1-based index into `Plan::names`.
    pub(super) name: u32,
}

/// The business's outbound calendar, shared by all customers.
pub(super) struct Plan {
    pub(super) campaigns: Vec<Campaign>,
    pub(super) names: Vec<String>,
    /// Name index of week 0's flash sale; week `w` is `flash + w`.
    pub(super) flash: u32,
}

/// Campaign name index of the abandoned-cart reminder.
pub(super) const REMINDER: u32 = 1;

impl Plan {
    pub(super) fn new(cfg: &GenConfig) -> Plan {
        let mut rng = StdRng::seed_from_u64(mix(cfg.seed, 0xCA3A_16E5));
        let weeks = cfg.days.div_ceil(7);
        let mut names = vec!["cart-reminder".to_string()];
        let flash = names.len() as u32 + 1;
        names.extend((1..=weeks).map(|w| format!("flash-w{w:02}")));
        let end = cfg.end_ms();
        let mut campaigns = Vec::new();
        for w in 0..weeks {
            for k in 1..=cfg.campaigns_per_week {
                let day = rng.gen_range(0..7i64);
                let hour = rng.gen_range(8..20i64);
                let at = cfg.start_ms
                    + i64::from(w) * WEEK_MS
                    + day * DAY_MS
                    + hour * HOUR_MS
                    + rng.gen_range(0..HOUR_MS);
                let channel = [
                    Channel::Email,
                    Channel::Sms,
                    Channel::Push,
                    Channel::DirectMail,
                ][pick(&mut rng, &[0.60, 0.20, 0.15, 0.05])];
                let reach = rng.gen_range(0.3..0.8);
                if at >= end {
                    continue;
                }
                names.push(format!("cmp-w{:02}-{k}-{}", w + 1, channel.as_str()));
                campaigns.push(Campaign {
                    at,
                    channel,
                    reach,
                    name: names.len() as u32,
                });
            }
        }
        campaigns.sort_by_key(|c| c.at);
        Plan {
            campaigns,
            names,
            flash,
        }
    }
}
