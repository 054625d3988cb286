//! `--shard K/N`: a deterministic 1/N slice of a suite's cells, for job arrays.
//!
//! Shard K of N (1-based) takes the cells whose index i has i % N == K - 1, so N shards with
//! K = 1..N cover every cell exactly once, and cells of each kind spread over the shards
//! (neighbouring cells, which tend to cost alike, go to different shards).

use std::fmt;
use std::str::FromStr;

/// Shard `k` of `n` (1 <= k <= n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, from 1.
    pub k: usize,
    /// How many shards.
    pub n: usize,
}

impl Shard {
    /// Does this shard run the cell at `index` (0-based, in the suite's order)?
    pub fn takes(&self, index: usize) -> bool {
        index % self.n == self.k - 1
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `K/N`, both whole numbers, 1 <= K <= N.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}` is not a shard: write K/N with 1 <= K <= N, e.g. `--shard 2/8`");
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        if n == 0 || k == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_cell_once() {
        let shards: Vec<Shard> = (1..=3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for i in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.takes(i)).count(), 1, "cell {i}");
        }
        assert!(shards[0].takes(0) && shards[1].takes(1) && shards[2].takes(5));
        assert_eq!(shards[1].to_string(), "2/3");
    }

    #[test]
    fn bad_shards_are_refused() {
        for s in ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3", "-1/2", ""] {
            assert!(s.parse::<Shard>().is_err(), "{s}");
        }
        assert_eq!(" 1 / 1 ".parse::<Shard>(), Ok(Shard { k: 1, n: 1 }));
    }
}
