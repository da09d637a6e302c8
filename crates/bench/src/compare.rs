//! `bench compare A B`: per-metric changes, and the CI regression gate.
//!
//! A metric **regresses** when it got worse by more than `threshold_pct` percent of its old
//! value *beyond its error bars*: with `worse = b − a` for lower-is-better metrics and `a − b`
//! for higher-is-better ones,
//!
//! ```text
//! regressed  ⇔  worse − (err_a + err_b) > threshold_pct / 100 · |a|
//! ```
//!
//! The error bars add (the two intervals must separate), so noisy metrics need a larger move
//! to fail the gate. Metrics present in only one report are listed, never failed.

use serde::Serialize;

use crate::export::fmt_num;
use crate::report::{Metric, Report};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub key: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub a: f64,
    pub a_err: f64,
    pub b: f64,
    pub b_err: f64,
    /// (b − a) / |a| in percent (NaN when a is 0).
    pub change_pct: f64,
    pub regressed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub threshold_pct: Option<f64>,
    pub changes: Vec<Change>,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
}

/// Whether a change from `a` to `b` is a regression (see the module docs).
pub fn regressed(m_a: &Metric, m_b: &Metric, threshold_pct: f64) -> bool {
    let worse = if m_a.higher_is_better {
        m_a.value - m_b.value
    } else {
        m_b.value - m_a.value
    };
    worse - (m_a.err + m_b.err) > threshold_pct / 100.0 * m_a.value.abs()
}

pub fn compare(a: &Report, b: &Report, threshold_pct: Option<f64>) -> Comparison {
    let ma = a.metrics();
    let mb = b.metrics();
    let mut changes = Vec::new();
    let mut only_in_a = Vec::new();
    for x in &ma {
        let key = x.key();
        match mb.iter().find(|y| y.key() == key) {
            Some(y) => changes.push(Change {
                key,
                unit: x.unit,
                higher_is_better: x.higher_is_better,
                a: x.value,
                a_err: x.err,
                b: y.value,
                b_err: y.err,
                change_pct: if x.value != 0.0 {
                    (y.value - x.value) / x.value.abs() * 100.0
                } else {
                    f64::NAN
                },
                regressed: threshold_pct.is_some_and(|t| regressed(x, y, t)),
            }),
            None => only_in_a.push(key),
        }
    }
    let keys_a: std::collections::HashSet<String> = ma.iter().map(|m| m.key()).collect();
    let only_in_b = mb
        .iter()
        .map(|m| m.key())
        .filter(|k| !keys_a.contains(k))
        .collect();
    Comparison {
        threshold_pct,
        changes,
        only_in_a,
        only_in_b,
    }
}

impl Comparison {
    pub fn regressions(&self) -> Vec<&Change> {
        self.changes.iter().filter(|c| c.regressed).collect()
    }

    /// A plain-text table of every change.
    pub fn table(&self) -> String {
        let w = self
            .changes
            .iter()
            .map(|c| c.key.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut s = format!(
            "{:<w$}  {:>20}  {:>20}  {:>9}  \n",
            "metric", "A", "B", "change"
        );
        let pm = |v: f64, e: f64| {
            if e > 0.0 {
                format!("{}±{}", fmt_num(v), fmt_num(e))
            } else {
                fmt_num(v)
            }
        };
        for c in &self.changes {
            let dir = if c.higher_is_better { "↑" } else { "↓" };
            let pct = if c.change_pct.is_finite() {
                format!("{:+.2}%", c.change_pct)
            } else {
                "-".into()
            };
            s.push_str(&format!(
                "{:<w$}  {:>20}  {:>20}  {:>9}  {dir}{}\n",
                c.key,
                pm(c.a, c.a_err),
                pm(c.b, c.b_err),
                pct,
                if c.regressed { "  REGRESSED" } else { "" }
            ));
        }
        for k in &self.only_in_a {
            s.push_str(&format!("{k:<w$}  only in A\n"));
        }
        for k in &self.only_in_b {
            s.push_str(&format!("{k:<w$}  only in B\n"));
        }
        s
    }
}
