//! PostgreSQL's binary COPY format, for the few column types `events` has.
//!
//! Binary rather than text: the server takes each value as it is stored
//! instead of parsing it (a timestamp, a UUID, escapes in every text field).
//! On the loader bench's million rows, a plain `COPY … (FORMAT binary)`
//! took 3.7–3.9 s against 5.1–6.5 s for the same rows as text
//! (docs/BENCHMARKS.md, "Loader"). The format is specified in the
//! PostgreSQL manual, "COPY", section "Binary Format".

use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// The file header: signature, flags (no OIDs), no header extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer: a tuple with -1 fields.
const TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// PostgreSQL's epoch (2000-01-01T00:00:00Z) in Unix microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
/// PostgreSQL's epoch as a Julian day number (`time`'s `to_julian_day`).
const PG_EPOCH_JULIAN_DAY: i32 = 2_451_545;

/// Rows in binary COPY format, appended to a byte buffer that can be sent
/// in pieces ([`BinaryCopy::take`]).
#[derive(Debug)]
pub struct BinaryCopy {
    buf: Vec<u8>,
}

impl BinaryCopy {
    /// Starts the stream (the header is the start of the first piece).
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(HEADER);
        Self { buf }
    }

    /// Starts a row of `fields` values.
    pub fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    fn value(&mut self, bytes: &[u8]) {
        let len = i32::try_from(bytes.len()).expect("a value under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// A `text` value (NUL-free UTF-8: the loader refuses lines with NUL).
    pub fn text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.value(s.as_bytes()),
            None => self.null(),
        }
    }

    pub fn uuid(&mut self, id: Uuid) {
        self.value(id.as_bytes());
    }

    /// A `timestamptz`: microseconds since 2000-01-01 UTC (sub-microsecond
    /// digits are dropped; events carry milliseconds).
    pub fn timestamptz(&mut self, ts: OffsetDateTime) {
        let micros = (ts.unix_timestamp_nanos() / 1_000) as i64 - PG_EPOCH_UNIX_MICROS;
        self.value(&micros.to_be_bytes());
    }

    /// A `date`: days since 2000-01-01.
    pub fn date(&mut self, day: Date) {
        self.value(&(day.to_julian_day() - PG_EPOCH_JULIAN_DAY).to_be_bytes());
    }

    pub fn int4(&mut self, v: Option<i32>) {
        match v {
            Some(v) => self.value(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    pub fn int8(&mut self, v: i64) {
        self.value(&v.to_be_bytes());
    }

    /// Takes what is buffered, to send it; the stream goes on in a buffer
    /// of the same capacity, so the next piece does not grow one from empty.
    pub fn take(&mut self) -> Vec<u8> {
        let capacity = self.buf.capacity();
        std::mem::replace(&mut self.buf, Vec::with_capacity(capacity))
    }

    /// Ends the stream: the last piece, with the trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&TRAILER);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn values_are_laid_out_as_the_manual_says() {
        let mut c = BinaryCopy::new(64);
        c.row(3);
        c.text(Some("ab"));
        c.null();
        c.timestamptz(datetime!(2000-01-01 00:00:01.5 UTC));
        let bytes = c.finish();
        let mut want = b"PGCOPY\n\xff\r\n\0".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // flags, extension length
        want.extend_from_slice(&[0, 3]);
        want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0, 0, 0, 8]);
        want.extend_from_slice(&1_500_000i64.to_be_bytes());
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn dates_count_days_from_2000() {
        let mut c = BinaryCopy::new(0);
        c.take();
        c.date(time::macros::date!(2000 - 01 - 01));
        c.date(time::macros::date!(2026 - 11 - 27));
        c.date(time::macros::date!(1999 - 12 - 31));
        let b = c.take();
        assert_eq!(&b[4..8], &0i32.to_be_bytes());
        assert_eq!(&b[12..16], &9827i32.to_be_bytes());
        assert_eq!(&b[20..24], &(-1i32).to_be_bytes());
    }

    #[test]
    fn times_before_2000_are_negative() {
        let mut c = BinaryCopy::new(0);
        c.take();
        c.timestamptz(datetime!(1999-12-31 23:59:59 UTC));
        assert_eq!(&c.take()[4..], &(-1_000_000i64).to_be_bytes());
    }
}
