//! The Avro schemas (the files in `schemas/`, compiled in): the touchpoint
//! reader schema and the schema of every derived type, parsed.

use apache_avro::Schema;

use super::encode::{encode_derived, encode_derived_into};
use super::SchemaError;
use crate::model::{DerivedEvent, DerivedType};

/// The touchpoint schema text.
pub const TOUCHPOINT_SCHEMA: &str = include_str!("../../../schemas/touchpoint.avsc");

/// The schema text of each derived type, in SPEC table order.
pub const DERIVED_SCHEMAS: [(DerivedType, &str); 9] = [
    (
        DerivedType::EngagementScore,
        include_str!("../../../schemas/engagement_score.avsc"),
    ),
    (
        DerivedType::CartAbandoned,
        include_str!("../../../schemas/cart_abandoned.avsc"),
    ),
    (
        DerivedType::CartRecovered,
        include_str!("../../../schemas/cart_recovered.avsc"),
    ),
    (
        DerivedType::ChurnRisk,
        include_str!("../../../schemas/churn_risk.avsc"),
    ),
    (
        DerivedType::JourneyStageChanged,
        include_str!("../../../schemas/journey_stage_changed.avsc"),
    ),
    (
        DerivedType::SurveyTrigger,
        include_str!("../../../schemas/survey_trigger.avsc"),
    ),
    (
        DerivedType::ContactFatigue,
        include_str!("../../../schemas/contact_fatigue.avsc"),
    ),
    (
        DerivedType::OrderAttributed,
        include_str!("../../../schemas/order_attributed.avsc"),
    ),
    (
        DerivedType::CustomerValue,
        include_str!("../../../schemas/customer_value.avsc"),
    ),
];

/// Parses a schema text.
pub fn parse_schema(name: &str, text: &str) -> Result<Schema, SchemaError> {
    Schema::parse_str(text).map_err(|e| SchemaError::Parse {
        name: name.to_string(),
        message: e.to_string(),
    })
}

/// The parsed touchpoint reader schema.
pub fn touchpoint_schema() -> Result<Schema, SchemaError> {
    parse_schema("touchpoint", TOUCHPOINT_SCHEMA)
}

/// The parsed schemas of the derived types, indexed by `DerivedType as usize`.
pub struct DerivedSchemas {
    schemas: Vec<Schema>,
}

impl DerivedSchemas {
    /// Parses the compiled-in schemas.
    pub fn load() -> Result<Self, SchemaError> {
        let schemas = DERIVED_SCHEMAS
            .iter()
            .map(|(t, text)| parse_schema(t.as_str(), text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DerivedSchemas { schemas })
    }

    /// The schema of a type.
    pub fn get(&self, t: DerivedType) -> &Schema {
        &self.schemas[t as usize]
    }

    /// Encodes a derived event as a plain Avro datum. The same event always
    /// gives the same bytes (maps are written in key order).
    pub fn encode_datum(&self, ev: &DerivedEvent) -> Result<Vec<u8>, SchemaError> {
        Ok(encode_derived(ev))
    }

    /// [`DerivedSchemas::encode_datum`], appended to `out`.
    pub fn encode_datum_into(
        &self,
        ev: &DerivedEvent,
        out: &mut Vec<u8>,
    ) -> Result<(), SchemaError> {
        encode_derived_into(ev, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_schemas_parse() {
        touchpoint_schema().unwrap();
        DerivedSchemas::load().unwrap();
    }
}
