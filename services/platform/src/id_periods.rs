//! The listener-id periods a set of listeners was identified under
//! (docs/COUNTING.md, "The listener period"). A listener id is stable for
//! one period, a UTC day (daily ids) or a UTC month (monthly ids), so a
//! union of listeners heard in more than one period counts a person once
//! per period: its reach is an upper bound.
//!
//! A day's reach sketch records which kinds of ids its listeners had
//! (`reach_sketches.day_ids`, `month_ids`); a block of days
//! (`reach_sketch_blocks`) records the periods themselves, so a report over
//! many days knows them from the blocks it merges, without reading each day.

use std::collections::BTreeSet;

use time::Date;

/// A set of listener-id periods: the days with daily ids and the months
/// with monthly ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdPeriods {
    /// Days whose listeners had daily ids: each is a period of its own.
    days: BTreeSet<Date>,
    /// The first days of the months whose listeners had monthly ids.
    months: BTreeSet<Date>,
}

/// The first day of `day`'s month: where its monthly ids' period starts.
pub fn month_of(day: Date) -> Date {
    day.replace_day(1).expect("every month has a first day")
}

impl IdPeriods {
    /// The periods of one day's listeners, given which kinds of ids they
    /// had.
    pub fn of_day(day: Date, day_ids: bool, month_ids: bool) -> Self {
        let mut p = Self::default();
        if day_ids {
            p.days.insert(day);
        }
        if month_ids {
            p.months.insert(month_of(day));
        }
        p
    }

    /// The periods as stored: days with daily ids, and months (any day of
    /// each) with monthly ids.
    pub fn stored(
        days: impl IntoIterator<Item = Date>,
        months: impl IntoIterator<Item = Date>,
    ) -> Self {
        Self {
            days: days.into_iter().collect(),
            months: months.into_iter().map(month_of).collect(),
        }
    }

    /// Adds `other`'s periods.
    pub fn union(&mut self, other: &Self) {
        self.days.extend(other.days.iter().copied());
        self.months.extend(other.months.iter().copied());
    }

    /// Whether the listeners span more than one period, which makes their
    /// united reach an upper bound.
    pub fn is_upper_bound(&self) -> bool {
        self.days.len() + self.months.len() > 1
    }

    /// The days with daily ids, ascending.
    pub fn days(&self) -> Vec<Date> {
        self.days.iter().copied().collect()
    }

    /// The first days of the months with monthly ids, ascending.
    pub fn months(&self) -> Vec<Date> {
        self.months.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn one_month_of_monthly_ids_is_one_period_and_daily_ids_are_one_per_day() {
        let mut month = IdPeriods::of_day(date!(2026 - 11 - 03), false, true);
        month.union(&IdPeriods::of_day(date!(2026 - 11 - 29), false, true));
        assert!(!month.is_upper_bound());
        assert_eq!(month.months(), vec![date!(2026 - 11 - 01)]);

        let mut across = month.clone();
        across.union(&IdPeriods::of_day(date!(2026 - 12 - 01), false, true));
        assert!(across.is_upper_bound());

        let mut daily = IdPeriods::of_day(date!(2026 - 11 - 03), true, false);
        assert!(!daily.is_upper_bound());
        daily.union(&IdPeriods::of_day(date!(2026 - 11 - 03), true, false));
        assert!(!daily.is_upper_bound(), "the same day twice is one period");
        daily.union(&IdPeriods::of_day(date!(2026 - 11 - 04), true, false));
        assert!(daily.is_upper_bound());

        // A day whose listeners had both kinds spans two periods.
        assert!(IdPeriods::of_day(date!(2026 - 11 - 03), true, true).is_upper_bound());
        assert!(!IdPeriods::default().is_upper_bound());
    }

    #[test]
    fn stored_periods_come_back_as_they_were_kept() {
        let p = IdPeriods::stored(
            [date!(2026 - 11 - 04), date!(2026 - 11 - 03)],
            [date!(2026 - 11 - 17)],
        );
        assert_eq!(p.days(), vec![date!(2026 - 11 - 03), date!(2026 - 11 - 04)]);
        assert_eq!(p.months(), vec![date!(2026 - 11 - 01)]);
        assert_eq!(IdPeriods::stored(p.days(), p.months()), p);
    }
}
