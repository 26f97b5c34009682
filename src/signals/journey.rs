//! `journey_stage_changed` (SPEC 4 "Journey stage", SPEC 7 "Journey").
//!
//! awareness → engagement → transaction → retention, forward only;
//! `at_risk` is entered from any stage when churn becomes `high`, and only
//! an order leaves it. One cause emits at most one change (from the stage
//! before the cause to the stage after it).

use serde::{Deserialize, Serialize};

use crate::model::{JourneyStage, TouchType};

/// Journey state: the current stage (None before the first event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyState {
    /// Current stage.
    pub stage: Option<JourneyStage>,
}

fn rank(s: JourneyStage) -> u8 {
    match s {
        JourneyStage::Awareness => 0,
        JourneyStage::Engagement => 1,
        JourneyStage::Transaction => 2,
        JourneyStage::Retention => 3,
        JourneyStage::AtRisk => 4,
    }
}

impl JourneyState {
    /// Moves the stage for a touch; `orders` is the order count after it.
    pub fn on_touch(&mut self, kind: TouchType, orders: u32) {
        let target = if kind == TouchType::OrderPlaced {
            if orders >= 2 {
                JourneyStage::Retention
            } else {
                JourneyStage::Transaction
            }
        } else if kind.is_passive() {
            JourneyStage::Awareness
        } else {
            JourneyStage::Engagement
        };
        self.stage = Some(match self.stage {
            None => target,
            Some(JourneyStage::AtRisk) if kind != TouchType::OrderPlaced => JourneyStage::AtRisk,
            Some(JourneyStage::AtRisk) => target,
            Some(cur) if rank(target) > rank(cur) => target,
            Some(cur) => cur,
        });
    }

    /// Churn became `high`.
    pub fn on_high_risk(&mut self) {
        self.stage = Some(JourneyStage::AtRisk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_only_and_at_risk() {
        let mut j = JourneyState::default();
        j.on_touch(TouchType::PageView, 0);
        assert_eq!(j.stage, Some(JourneyStage::Awareness));
        j.on_touch(TouchType::Search, 0);
        assert_eq!(j.stage, Some(JourneyStage::Engagement));
        j.on_touch(TouchType::PageView, 0);
        assert_eq!(j.stage, Some(JourneyStage::Engagement));
        j.on_touch(TouchType::OrderPlaced, 1);
        assert_eq!(j.stage, Some(JourneyStage::Transaction));
        j.on_high_risk();
        j.on_touch(TouchType::Search, 1);
        assert_eq!(j.stage, Some(JourneyStage::AtRisk));
        j.on_touch(TouchType::OrderPlaced, 2);
        assert_eq!(j.stage, Some(JourneyStage::Retention));
        j.on_touch(TouchType::OrderPlaced, 3);
        assert_eq!(j.stage, Some(JourneyStage::Retention));
    }
}
