//! A campaign's day recounted from the raw events in S3 (Athena, over the
//! SAM template's Glue table), against the rollups: how days whose raw
//! events PostgreSQL no longer keeps are audited (`earshot verify
//! --recount FILE`).
//!
//! [`athena_sql`] writes the query; Athena's CSV of its result (a header
//! row, every value quoted) is read by [`Recount::parse_csv`] and compared
//! row by row with `rollup_hourly` by [`Recount::compare`]. The query
//! applies the counting rule exactly as [`crate::verify`] does on
//! PostgreSQL (the same SQL per count), after taking every event id once:
//! a Firehose retry repeats lines in S3 that the loader stores once.

use std::collections::BTreeMap;
use std::path::Path;

use earshot_domain::CampaignId;
use earshot_platform::rollup::{hourly_column, HOURLY_HITS};
use sqlx::{AssertSqlSafe, PgPool};
use time::{Date, Duration};

use crate::partitions::iso;
use crate::verify::{events_count, rolled_up_id, Mismatch};

/// The columns that name a row of the recount, in the query's order.
pub const KEY_COLUMNS: [&str; 5] = ["campaign", "day", "creative", "episode", "event"];

/// A valid Glue database name (the SAM template's `GlueDatabaseName`
/// pattern: `^[a-z0-9_]{1,255}$`).
fn valid_database(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Athena's query recounting `campaign`'s UTC `day` from `database.events`.
/// Firehose files an event under the hour it arrived, which for a hit of
/// `day` is that day or, for hits buffered over midnight, the next; the
/// partition filter reads those two days and `ts` picks the day's hits.
/// The database and campaign are checked names and the day a date, so the
/// text holds nothing else.
pub fn athena_sql(database: &str, campaign: &str, day: Date) -> Result<String, BadQueryInput> {
    if !valid_database(database) {
        return Err(BadQueryInput::Database(database.to_owned()));
    }
    let campaign =
        CampaignId::parse(campaign).map_err(|e| BadQueryInput::Campaign(campaign.to_owned(), e))?;
    let partition = |d: Date| {
        format!(
            "(year = '{:04}' AND month = '{:02}' AND day = '{:02}')",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    };
    let counts: Vec<String> = HOURLY_HITS
        .iter()
        .map(|&h| format!("{} AS {}", events_count(h), hourly_column(h)))
        .collect();
    Ok(format!(
        "WITH hits AS (
    SELECT DISTINCT id,
           {creative} AS creative,
           {episode} AS episode,
           coalesce(event, '') AS event, listener, verdict
    FROM {database}.events
    WHERE ({today} OR {next})
      AND campaign = '{campaign}' AND substr(ts, 1, 10) = '{day}'
)
SELECT '{campaign}' AS campaign, '{day}' AS \"day\", creative, episode, event,
       {counts}
FROM hits
GROUP BY creative, episode, event
ORDER BY creative, episode, event",
        today = partition(day),
        next = partition(day + Duration::DAY),
        campaign = campaign.as_str(),
        day = iso(day),
        counts = counts.join(",\n       "),
        creative = rolled_up_id("creative"),
        episode = rolled_up_id("episode"),
    ))
}

/// What [`athena_sql`] refuses.
#[derive(Debug, thiserror::Error)]
pub enum BadQueryInput {
    #[error("{0:?} is not a Glue database name (lower-case letters, digits and _, at most 255)")]
    Database(String),
    #[error("campaign {0:?}: {1}")]
    Campaign(String, earshot_domain::IdError),
}

/// A recount file that cannot be read as one.
#[derive(Debug, thiserror::Error)]
pub enum RecountFileError {
    #[error("cannot read the recount {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the recount has no column {0:?} (its header must name {columns})", columns = expected_header().join(", "))]
    MissingColumn(String),
    #[error("line {line}: {what}")]
    Line { line: u64, what: String },
    #[error("line {line}: {key} appears twice")]
    Duplicate { line: u64, key: String },
    #[error("the recount has no rows")]
    Empty,
}

/// Every column a recount file must have: the keys, then one per count.
pub fn expected_header() -> Vec<&'static str> {
    KEY_COLUMNS
        .into_iter()
        .chain(HOURLY_HITS.iter().map(|&h| hourly_column(h)))
        .collect()
}

/// One row's key: campaign, day, creative, episode, event ('' for none).
type Key = (String, Date, String, String, String);

/// A recount of some campaign-days: its counts per (campaign, day,
/// creative, episode, event), one per [`HOURLY_HITS`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recount {
    rows: BTreeMap<Key, Vec<i64>>,
}

impl Recount {
    /// Reads the CSV file at `path` ([`Recount::parse_csv`]).
    pub fn read(path: &Path) -> Result<Self, RecountFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecountFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_csv(&text)
    }

    /// Parses a recount as Athena writes a query's result: a header row,
    /// then one row per line, values quoted (an empty field is '').
    /// Columns are found by name; others are ignored.
    pub fn parse_csv(text: &str) -> Result<Self, RecountFileError> {
        let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let line_of = |pos: Option<&csv::Position>| pos.map_or(0, |p| p.line());
        let header = reader.headers().map_err(|e| RecountFileError::Line {
            line: line_of(e.position()),
            what: e.to_string(),
        })?;
        let at: Vec<usize> = expected_header()
            .into_iter()
            .map(|name| {
                header
                    .iter()
                    .position(|h| h == name)
                    .ok_or_else(|| RecountFileError::MissingColumn(name.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        let mut rows = BTreeMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| RecountFileError::Line {
                line: line_of(e.position()),
                what: e.to_string(),
            })?;
            let line = line_of(record.position());
            let field = |i: usize| record.get(at[i]).unwrap_or_default();
            let day = Date::parse(
                field(1),
                &time::format_description::well_known::Iso8601::DATE,
            )
            .map_err(|_| RecountFileError::Line {
                line,
                what: format!("day {:?} is not YYYY-MM-DD", field(1)),
            })?;
            let counts = (KEY_COLUMNS.len()..at.len())
                .map(|i| {
                    field(i).parse::<i64>().map_err(|_| RecountFileError::Line {
                        line,
                        what: format!("{} {:?} is not a count", expected_header()[i], field(i)),
                    })
                })
                .collect::<Result<Vec<i64>, _>>()?;
            let key = (
                field(0).to_owned(),
                day,
                field(2).to_owned(),
                field(3).to_owned(),
                field(4).to_owned(),
            );
            if rows.contains_key(&key) {
                return Err(RecountFileError::Duplicate {
                    line,
                    key: key_text(&key),
                });
            }
            rows.insert(key, counts);
        }
        if rows.is_empty() {
            return Err(RecountFileError::Empty);
        }
        Ok(Self { rows })
    }

    /// The (campaign, day) pairs the recount covers.
    pub fn days(&self) -> Vec<(String, Date)> {
        let mut v: Vec<(String, Date)> = self.rows.keys().map(|k| (k.0.clone(), k.1)).collect();
        v.dedup();
        v
    }

    /// Every count of the covered campaign-days where the rollups differ
    /// (empty when they agree): `from_events` is the recount's figure,
    /// `from_rollups` the rollups'. A row on one side only counts as zeros
    /// on the other.
    pub async fn compare(&self, pool: &PgPool) -> Result<Vec<Mismatch>, sqlx::Error> {
        let sums: Vec<String> = HOURLY_HITS
            .iter()
            .map(|&h| format!("sum({})::bigint", hourly_column(h)))
            .collect();
        // Column names of the registry only.
        let sql = format!(
            "SELECT creative, episode, event, {} FROM rollup_hourly
             WHERE campaign = $1 AND hour >= $2 AND hour < $3
             GROUP BY 1, 2, 3",
            sums.join(", ")
        );
        let mut rolled: BTreeMap<Key, Vec<i64>> = BTreeMap::new();
        for (campaign, day) in self.days() {
            let from = day.midnight().assume_utc();
            let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(&campaign)
                .bind(from)
                .bind(from + Duration::DAY)
                .fetch_all(pool)
                .await?;
            for row in rows {
                use sqlx::Row;
                let counts = (0..HOURLY_HITS.len())
                    .map(|i| row.try_get::<i64, _>(3 + i))
                    .collect::<Result<Vec<i64>, _>>()?;
                let key = (
                    campaign.clone(),
                    day,
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                );
                rolled.insert(key, counts);
            }
        }
        let zeros = vec![0; HOURLY_HITS.len()];
        let keys: std::collections::BTreeSet<&Key> =
            self.rows.keys().chain(rolled.keys()).collect();
        let mut out = Vec::new();
        for key in keys {
            let file = self.rows.get(key).unwrap_or(&zeros);
            let db = rolled.get(key).unwrap_or(&zeros);
            for (i, &h) in HOURLY_HITS.iter().enumerate() {
                if file[i] != db[i] {
                    out.push(Mismatch {
                        what: format!("recount_{}", hourly_column(h)),
                        key: key_text(key),
                        from_events: file[i],
                        from_rollups: db[i],
                    });
                }
            }
        }
        Ok(out)
    }
}

/// `campaign/creative/episode/event/day`, as verify's other keys read.
fn key_text(k: &Key) -> String {
    format!("{}/{}/{}/{}/{}", k.0, k.2, k.3, k.4, iso(k.1))
}
