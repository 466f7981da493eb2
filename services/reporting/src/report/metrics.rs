//! A report row's numbers: the metric registry's values, as JSON, CSV cells
//! and the OpenAPI schema, and their sums.

use earshot_domain::metric::{counter_count, counter_index, counters, Metric, Registry, Source};
use serde::ser::{Serialize, SerializeMap, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, Ref, RefOr};

/// The values of a registry's metrics for one row (or the totals).
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    registry: Registry,
    /// One per counter of the registry, in its order.
    counts: Vec<i64>,
    /// Daily unique listeners summed over the row's days; `None` where a
    /// report cannot show them (hour granularity, grouped by more than
    /// creative).
    unique_listeners: Option<i64>,
    /// Distinct listeners over the row's days, from the reach sketches;
    /// `None` where a report cannot show them (as for unique listeners).
    reach: Option<Reach>,
    /// Whether the bot counters by event kind are shown (`include_bots`).
    bots: bool,
}

/// A row's reach: its listeners, and whether they were identified under
/// more than one listener-id period (an upper bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reach {
    pub listeners: i64,
    pub upper_bound: bool,
}

/// One metric's value in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Count(i64),
    /// A metric the row cannot show, or a ratio over nothing: null.
    Null,
    Ratio(f64),
    Flag(bool),
}

impl Metrics {
    /// `counts` holds one value per counter of `registry`, in its order.
    pub fn new(
        registry: Registry,
        counts: Vec<i64>,
        unique_listeners: Option<i64>,
        bots: bool,
    ) -> Self {
        assert_eq!(
            counts.len(),
            counter_count(registry),
            "one count per counter"
        );
        Self {
            registry,
            counts,
            unique_listeners,
            reach: None,
            bots,
        }
    }

    /// The counter named `name`.
    pub fn count(&self, name: &str) -> Option<i64> {
        counter_index(self.registry, name).map(|i| self.counts[i])
    }

    /// The value of `m`, a metric of this row's registry.
    pub fn value(&self, m: &Metric) -> Value {
        match m.source {
            Source::Counter { .. } => self.count(m.name).map_or(Value::Null, Value::Count),
            Source::DailyUniqueListeners => self.unique_listeners.map_or(Value::Null, Value::Count),
            Source::Reach => self
                .reach
                .map_or(Value::Null, |r| Value::Count(r.listeners)),
            Source::ReachUpperBound => self
                .reach
                .map_or(Value::Null, |r| Value::Flag(r.upper_bound)),
            Source::PerReach { numerator } => match (self.count(numerator), self.reach) {
                (Some(n), Some(r)) if r.listeners > 0 => {
                    Value::Ratio(n as f64 / r.listeners as f64)
                }
                _ => Value::Null,
            },
            Source::Ratio {
                numerator,
                denominator,
            } => match (self.count(numerator), self.count(denominator)) {
                (Some(n), Some(d)) if d > 0 => Value::Ratio(n as f64 / d as f64),
                _ => Value::Null,
            },
        }
    }

    /// The metrics a report shows, in order: all but the bot counters by
    /// event kind, which only `include_bots=true` shows.
    pub fn shown(&self) -> impl Iterator<Item = &'static Metric> + '_ {
        self.registry
            .iter()
            .filter(|m| self.bots || m.bot_breakdown().is_none())
    }

    /// The sums of `rows`' counters (unique listeners and reach excepted:
    /// they are not additive, and come from their own queries).
    pub fn sum<'a>(
        registry: Registry,
        rows: impl Iterator<Item = &'a Metrics>,
        bots: bool,
    ) -> Self {
        let mut counts = vec![0; counter_count(registry)];
        for row in rows {
            for (total, n) in counts.iter_mut().zip(&row.counts) {
                *total += n;
            }
        }
        Self::new(registry, counts, None, bots)
    }

    pub fn set_unique_listeners(&mut self, n: Option<i64>) {
        self.unique_listeners = n;
    }

    pub fn set_reach(&mut self, r: Option<Reach>) {
        self.reach = r;
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Count(n) => s.serialize_i64(*n),
            Value::Null => s.serialize_none(),
            Value::Ratio(r) => s.serialize_f64(*r),
            Value::Flag(b) => s.serialize_bool(*b),
        }
    }
}

/// The bot counters by event kind, under their short names.
struct BotBreakdown<'a>(&'a Metrics);

impl Serialize for BotBreakdown<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for m in self.0.registry {
            if let Some(name) = m.bot_breakdown() {
                map.serialize_entry(name, &self.0.value(m))?;
            }
        }
        map.end()
    }
}

/// Every metric under its name in registry order, the bot counters by
/// event kind under `bots` at the end (with `include_bots=true` only).
impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for m in self.registry.iter().filter(|m| m.bot_breakdown().is_none()) {
            map.serialize_entry(m.name, &self.value(m))?;
        }
        if self.bots {
            map.serialize_entry("bots", &BotBreakdown(self))?;
        }
        map.end()
    }
}

fn int64() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// The schema of one metric's value.
fn value_schema(m: &Metric) -> ObjectBuilder {
    let nullable = |t: Type| utoipa::openapi::schema::SchemaType::from_iter([t, Type::Null]);
    let b = match m.source {
        Source::Counter { .. } => int64(),
        Source::DailyUniqueListeners | Source::Reach => {
            int64().schema_type(nullable(Type::Integer))
        }
        Source::ReachUpperBound => ObjectBuilder::new().schema_type(nullable(Type::Boolean)),
        Source::Ratio { .. } | Source::PerReach { .. } => ObjectBuilder::new()
            .schema_type(nullable(Type::Number))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double))),
    };
    b.description(Some(m.doc))
}

/// The bot counters by event kind (`bots` with `include_bots=true`).
pub struct BotHits;

impl utoipa::PartialSchema for BotHits {
    fn schema() -> RefOr<Schema> {
        let mut b = ObjectBuilder::new();
        for m in earshot_domain::metric::METRICS {
            if let Some(name) = m.bot_breakdown() {
                b = b.property(name, int64()).required(name);
            }
        }
        b.into()
    }
}

impl utoipa::ToSchema for BotHits {}

impl utoipa::PartialSchema for Metrics {
    fn schema() -> RefOr<Schema> {
        let mut b = ObjectBuilder::new()
            .description(Some("Counted events per VAST kind, and the hit counts."));
        for m in earshot_domain::metric::METRICS {
            if m.bot_breakdown().is_some() {
                continue;
            }
            b = b.property(m.name, value_schema(m));
            if matches!(m.source, Source::Counter { .. }) {
                b = b.required(m.name);
            }
        }
        let mut bot_hits = Ref::from_schema_name("BotHits");
        bot_hits.description = "With `include_bots=true`: bot hits per event kind.".into();
        let bots = OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(bot_hits);
        b.property("bots", bots).into()
    }
}

impl utoipa::ToSchema for Metrics {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use utoipa::PartialSchema as _;
        schemas.push(("BotHits".into(), BotHits::schema()));
    }
}

/// The counters' values of `registry` read from a query row, where each
/// counter is a column of its name.
pub fn read_counts(
    row: &sqlx::postgres::PgRow,
    registry: Registry,
) -> Result<Vec<i64>, sqlx::Error> {
    use sqlx::Row;
    counters(registry)
        .map(|(_, m)| row.try_get::<i64, _>(m.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_domain::metric::METRICS;

    fn metrics(bots: bool) -> Metrics {
        let counts = (1..=counter_count(METRICS) as i64).collect();
        let mut m = Metrics::new(METRICS, counts, Some(7), bots);
        m.set_reach(Some(Reach {
            listeners: 4,
            upper_bound: true,
        }));
        m
    }

    #[test]
    fn json_lists_the_registry_in_order_with_the_bot_breakdown_last() {
        let v = serde_json::to_string(&metrics(true)).unwrap();
        assert_eq!(
            v,
            r#"{"impressions":1,"raw_hits":2,"bot_hits":3,"invalid_hits":4,"unique_listeners":7,"reach":4,"frequency":0.25,"reach_upper_bound":true,"starts":5,"first_quartiles":6,"midpoints":7,"third_quartiles":8,"completes":9,"completion_rate":1.8,"clicks":10,"skips":11,"errors":12,"bots":{"impressions":13,"starts":14,"completes":15,"clicks":16}}"#
        );
        let v = serde_json::to_value(metrics(false)).unwrap();
        assert!(v.get("bots").is_none());
    }

    #[test]
    fn frequency_is_null_without_reach() {
        let mut m = metrics(false);
        let frequency = METRICS.iter().find(|m| m.name == "frequency").unwrap();
        m.set_reach(Some(Reach::default()));
        assert_eq!(m.value(frequency), Value::Null);
        m.set_reach(None);
        assert_eq!(m.value(frequency), Value::Null);
    }

    #[test]
    fn sums_add_counters_and_recompute_ratios() {
        let t = Metrics::sum(METRICS, [metrics(false), metrics(false)].iter(), false);
        assert_eq!(t.count("starts"), Some(10));
        assert_eq!(t.value(&METRICS[4]), Value::Null, "uniques are not summed");
        for name in ["reach", "frequency", "reach_upper_bound"] {
            let m = METRICS.iter().find(|m| m.name == name).unwrap();
            assert_eq!(t.value(m), Value::Null, "{name} is not summed");
        }
        let rate = METRICS
            .iter()
            .find(|m| m.name == "completion_rate")
            .unwrap();
        assert_eq!(t.value(rate), Value::Ratio(18.0 / 10.0));
    }
}
