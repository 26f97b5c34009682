//! Business KPI facts (the omnichannel scorecard) the engine reports as it
//! goes. Collection is off unless an edge asks for it ([`super::Engine::collect_kpis`]);
//! the edge turns them into metrics. Gauges of customers per churn level
//! and per journey stage are kept as counts in the engine instead.

use crate::model::{Channel, ChurnLevel, JourneyStage, Survey, TouchType};

/// One fact for the KPI metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Kpi {
    /// An accepted touchpoint.
    Touch {
        /// Its channel.
        channel: Channel,
        /// Its type.
        kind: TouchType,
    },
    /// An order.
    Order {
        /// Its channel.
        channel: Channel,
        /// Its currency (as given).
        currency: Option<String>,
        /// Its value.
        value: Option<f64>,
    },
    /// A cart became eligible for abandonment (first add or checkout).
    CartStarted {
        /// Channel of that activity.
        channel: Channel,
    },
    /// A cart was abandoned.
    CartAbandoned {
        /// Channel of the cart's last activity.
        channel: Channel,
    },
    /// An abandoned cart was recovered.
    CartRecovered {
        /// Channel of the recovering order.
        channel: Channel,
    },
    /// A campaign click (message_clicked with a campaign id).
    CampaignClick {
        /// Channel of the click.
        channel: Channel,
    },
    /// An order within the conversion window after a click.
    CampaignConversion {
        /// Channel of the converted click.
        channel: Channel,
    },
    /// A survey answer.
    SurveyScore {
        /// Which survey.
        survey: Survey,
        /// Channel of the answer.
        channel: Channel,
        /// The answer.
        score: i32,
    },
    /// A support contact was resolved.
    SupportResolved {
        /// Channel of the contact.
        channel: Channel,
        /// Contact to resolution, in seconds.
        seconds: f64,
    },
    /// Two consecutive own touches of a customer on different channels.
    ChannelSwitch {
        /// Channel of the earlier touch.
        from: Channel,
        /// Channel of the later touch.
        to: Channel,
    },
    /// A `customer_value` was emitted.
    PredictedClv {
        /// The customer's journey stage.
        stage: Option<JourneyStage>,
        /// The customer's churn level.
        level: ChurnLevel,
        /// Its predicted CLV.
        predicted_clv: f64,
    },
    /// A customer with orders turned `high` churn risk: the value at risk.
    ClvTurningHighRisk {
        /// Currency of the customer's latest order carrying one.
        currency: Option<String>,
        /// The customer's predicted CLV at that moment.
        predicted_clv: f64,
    },
}

/// Customers per churn level and per journey stage (gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Population {
    /// Indexed by `ChurnLevel::index`.
    pub levels: [i64; 3],
    /// Indexed by `JourneyStage::index`.
    pub stages: [i64; 5],
}

impl Population {
    /// Moves one customer between levels.
    pub fn level(&mut self, from: Option<ChurnLevel>, to: Option<ChurnLevel>) {
        if let Some(f) = from {
            self.levels[f.index()] -= 1;
        }
        if let Some(t) = to {
            self.levels[t.index()] += 1;
        }
    }

    /// Moves one customer between stages.
    pub fn stage(&mut self, from: Option<JourneyStage>, to: Option<JourneyStage>) {
        if let Some(f) = from {
            self.stages[f.index()] -= 1;
        }
        if let Some(t) = to {
            self.stages[t.index()] += 1;
        }
    }
}
