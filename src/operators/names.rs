//! How operator names print numbers.

/// `v` as the language would write it: `1.0`, `0.25`, `-3.0`, `1e-6`.
pub(crate) fn number(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}
