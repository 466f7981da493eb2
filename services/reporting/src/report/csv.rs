//! A report as CSV: the JSON's rows and columns, one line per row.

use super::metrics::{Metrics, Value};
use super::query::Report;
use super::spec::ReportSpec;

/// The same rows as CSV: a header, then one line per row, the metrics as
/// the JSON shows them (the bot counters by event kind under their full
/// names, with `include_bots=true`).
pub fn to_csv(report: &Report, spec: &ReportSpec) -> String {
    let mut out = String::new();
    let mut header: Vec<&str> = vec!["bucket"];
    header.extend(spec.group_by.iter().map(|d| d.column()));
    header.extend(report.totals.shown().map(|m| m.name));
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for r in &report.rows {
        let mut cells: Vec<String> = vec![r.bucket.clone()];
        for d in &spec.group_by {
            cells.push(csv_cell(
                r.dims
                    .get(d.column())
                    .cloned()
                    .flatten()
                    .as_deref()
                    .unwrap_or(""),
            ));
        }
        cells.extend(metric_cells(&r.metrics));
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A row's metrics as cells: counts as integers, ratios as JSON numbers,
/// nulls empty.
fn metric_cells(m: &Metrics) -> impl Iterator<Item = String> + '_ {
    m.shown().map(|metric| match m.value(metric) {
        Value::Count(n) => n.to_string(),
        Value::Ratio(r) => serde_json::to_string(&r).unwrap_or_default(),
        Value::Flag(b) => b.to_string(),
        Value::Null => String::new(),
    })
}

/// RFC 4180 quoting, and a leading quote mark against spreadsheet formula
/// injection (`=`, `+`, `-`, `@` at the start of a cell).
fn csv_cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=SUM(A1)"), "'=SUM(A1)");
    }
}
