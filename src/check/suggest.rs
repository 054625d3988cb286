//! "Did you mean" suggestions.

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let d = strsim::levenshtein(word, c);
        let limit = (word.len().max(c.len()) / 3).max(1);
        let score = strsim::jaro_winkler(word, c);
        let close = d <= limit || score >= 0.9 || (c.contains(word) && word.len() >= 3);
        if close && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn finds_typos() {
        let names = ["x_true", "x_hat", "sigma_y", "karras"];
        assert_eq!(closest("x_ture", names.iter().copied()), Some("x_true"));
        assert_eq!(closest("sigma", names.iter().copied()), Some("sigma_y"));
        assert_eq!(closest("karas", names.iter().copied()), Some("karras"));
        assert_eq!(closest("completely_else", names.iter().copied()), None);
    }
}
