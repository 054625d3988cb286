//! "Did you mean" suggestions.

/// The candidate closest to `word`, if one is close enough to be a likely typo. Of equally
/// close candidates the alphabetically first wins, so the answer does not depend on the order
/// of `candidates` (often a hash map's).
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let score = strsim::jaro_winkler(word, c);
        let better = best.is_none_or(|(b, s)| score > s || (score == s && c < b));
        if !better {
            continue;
        }
        let limit = (word.len().max(c.len()) / 3).max(1);
        let close = score >= 0.9
            || (c.contains(word) && word.len() >= 3)
            || strsim::levenshtein(word, c) <= limit;
        if close {
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

    #[test]
    fn ties_go_to_the_alphabetically_first_whatever_the_order() {
        let names = ["x_105", "x_100", "x_150"];
        assert_eq!(closest("y_1005", names.iter().copied()), Some("x_100"));
        assert_eq!(
            closest("y_1005", names.iter().rev().copied()),
            Some("x_100")
        );
    }
}
