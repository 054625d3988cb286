//! Dimension variables and their solver.
//!
//! A [`DimTable`] holds every dimension variable of one check. Variables are bound by
//! unification (`[?c, 28, 28]` against `[1, 28, 28]` binds `?c = 1`), linked to each other
//! (union-find), and related by scale constraints (`downsample(4)`: `h = 4 * h'`). Each time a
//! variable is bound, the constraints that mention it are re-examined, so a shape that only
//! becomes known later (when the operator is applied to an image) is still checked, and a
//! violated constraint reports the place that created it.

use super::types::{Dim, DimVar, Shape, Type};
use crate::source::Span;

/// `big = factor * small`, created by an operator that scales a dimension.
#[derive(Debug, Clone)]
pub struct Scale {
    /// The larger dimension (the operator's input side for downsampling).
    pub big: Dim,
    /// The smaller dimension.
    pub small: Dim,
    /// The integer factor.
    pub factor: u64,
    /// Where the constraint comes from (the `downsample(4)` call).
    pub origin: Span,
    /// What to call the dimension in messages ("height").
    pub what: &'static str,
}

/// Why two shapes or dimensions do not fit.
#[derive(Debug, Clone, PartialEq)]
pub enum Conflict {
    /// Different ranks.
    Rank(usize, usize),
    /// Different known sizes at one position.
    Size {
        /// The position in the shape.
        axis: usize,
        /// The left size.
        left: u64,
        /// The right size.
        right: u64,
    },
    /// A scale constraint whose larger dimension, `factor` times `small`, is past `u64::MAX`.
    TooLarge {
        /// The smaller dimension's size.
        small: u64,
        /// The factor.
        factor: u64,
        /// Where the constraint comes from.
        origin: Span,
        /// The dimension's name.
        what: &'static str,
    },
    /// A scale constraint that cannot hold: `big` is not `factor` times anything.
    Scale {
        /// The size that should be divisible.
        big: u64,
        /// The factor.
        factor: u64,
        /// Where the constraint comes from.
        origin: Span,
        /// The dimension's name.
        what: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Free,
    Link(DimVar),
    Bound(u64),
}

/// All dimension variables of one check.
#[derive(Debug, Default)]
pub struct DimTable {
    slots: Vec<Slot>,
    scales: Vec<Scale>,
    /// While a snapshot is open: every change to a slot, as (variable, its value before), so a
    /// rollback undoes the changes made since its snapshot instead of copying every slot.
    trail: Vec<(u32, Slot)>,
    /// Snapshots taken and not rolled back yet.
    open: usize,
}

/// The state of a [`DimTable`] at one moment, to undo what a piece of code learned.
#[derive(Debug, Clone)]
pub struct DimSnapshot {
    slots: usize,
    scales: usize,
    trail: usize,
}

impl DimTable {
    /// The current bindings, for [`DimTable::rollback`]. Costs nothing, whatever the size of
    /// the table: changes are recorded from here on.
    pub fn snapshot(&mut self) -> DimSnapshot {
        self.open += 1;
        DimSnapshot {
            slots: self.slots.len(),
            scales: self.scales.len(),
            trail: self.trail.len(),
        }
    }

    /// Undoes every binding and scale constraint made since `snap`. Variables created since
    /// stay (nodes may name them): a newer variable linked to an older one keeps its link to
    /// the restored variable, and no older variable is bound through a newer one any more.
    /// Costs the number of changes undone.
    pub fn rollback(&mut self, snap: DimSnapshot) {
        while self.trail.len() > snap.trail {
            let Some((v, old)) = self.trail.pop() else {
                break;
            };
            if (v as usize) < snap.slots {
                self.slots[v as usize] = old;
            }
        }
        self.scales.truncate(snap.scales);
        self.open = self.open.saturating_sub(1);
        if self.open == 0 {
            self.trail.clear();
        }
    }

    /// Sets variable `v`'s slot, recording its old value while a snapshot is open.
    fn set(&mut self, v: DimVar, slot: Slot) {
        let i = v.0 as usize;
        if self.open > 0 {
            self.trail.push((v.0, self.slots[i]));
        }
        self.slots[i] = slot;
    }

    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new unbound dimension.
    pub fn fresh(&mut self) -> Dim {
        self.slots.push(Slot::Free);
        Dim::Var(DimVar(self.slots.len() as u32 - 1))
    }

    /// A shape of `rank` fresh dimensions.
    pub fn fresh_shape(&mut self, rank: usize) -> Shape {
        Shape::Dims((0..rank).map(|_| self.fresh()).collect())
    }

    /// Follows links to the representative variable.
    fn root(&self, mut v: DimVar) -> DimVar {
        while let Some(Slot::Link(n)) = self.slots.get(v.0 as usize) {
            v = *n;
        }
        v
    }

    /// The dimension with every known binding applied.
    pub fn resolve(&self, d: Dim) -> Dim {
        match d {
            Dim::Known(_) => d,
            Dim::Var(v) => {
                let r = self.root(v);
                match self.slots.get(r.0 as usize) {
                    Some(Slot::Bound(n)) => Dim::Known(*n),
                    _ => Dim::Var(r),
                }
            }
        }
    }

    /// The shape with every known binding applied.
    pub fn resolve_shape(&self, s: &Shape) -> Shape {
        match s {
            Shape::Unknown => Shape::Unknown,
            Shape::Dims(d) => Shape::Dims(d.iter().map(|&x| self.resolve(x)).collect()),
        }
    }

    /// The type with every known binding applied (for messages and the graph).
    pub fn resolve_type(&self, t: &Type) -> Type {
        match t {
            Type::Tensor(s) => Type::Tensor(self.resolve_shape(s)),
            Type::ShapeVal(s) => Type::ShapeVal(self.resolve_shape(s)),
            Type::Operator(o) => {
                let mut o = o.clone();
                o.domain = self.resolve_shape(&o.domain);
                o.range = self.resolve_shape(&o.range);
                Type::Operator(o)
            }
            Type::Model(m) => {
                let mut m = m.clone();
                m.shape = self.resolve_shape(&m.shape);
                Type::Model(m)
            }
            Type::List(e) => Type::List(Box::new(self.resolve_type(e))),
            Type::Tuple(ts) => Type::Tuple(ts.iter().map(|t| self.resolve_type(t)).collect()),
            other => other.clone(),
        }
    }

    /// Adds `big = factor * small` and checks it against what is already known.
    pub fn add_scale(&mut self, scale: Scale) -> Result<(), Conflict> {
        self.scales.push(scale);
        self.propagate()
    }

    /// Makes two dimensions equal.
    pub fn unify_dim(&mut self, a: Dim, b: Dim) -> Result<(), (u64, u64)> {
        match (self.resolve(a), self.resolve(b)) {
            (Dim::Known(x), Dim::Known(y)) => {
                if x == y {
                    Ok(())
                } else {
                    Err((x, y))
                }
            }
            (Dim::Var(v), Dim::Known(n)) | (Dim::Known(n), Dim::Var(v)) => {
                self.set(v, Slot::Bound(n));
                Ok(())
            }
            (Dim::Var(v), Dim::Var(w)) => {
                if v != w {
                    self.set(v, Slot::Link(w));
                }
                Ok(())
            }
        }
    }

    /// Makes two shapes equal, dimension by dimension. An unknown shape fits anything.
    pub fn unify_shape(&mut self, a: &Shape, b: &Shape) -> Result<(), Conflict> {
        let (Shape::Dims(x), Shape::Dims(y)) = (a, b) else {
            return Ok(());
        };
        if x.len() != y.len() {
            return Err(Conflict::Rank(x.len(), y.len()));
        }
        // Check all known pairs first so a mismatch binds nothing.
        for (axis, (&p, &q)) in x.iter().zip(y).enumerate() {
            if let (Dim::Known(l), Dim::Known(r)) = (self.resolve(p), self.resolve(q)) {
                if l != r {
                    return Err(Conflict::Size {
                        axis,
                        left: l,
                        right: r,
                    });
                }
            }
        }
        for (axis, (&p, &q)) in x.iter().zip(y).enumerate() {
            self.unify_dim(p, q)
                .map_err(|(left, right)| Conflict::Size { axis, left, right })?;
        }
        self.propagate()
    }

    /// Like [`Self::unify_shape`], but broadcasting as NumPy and the runtime do: shapes are
    /// aligned on their last dimensions, the shorter one counts as having leading dimensions
    /// of size 1 (an image `[C, H, W]` against a batch `[N, C, H, W]`), and a dimension of
    /// size 1 on either side takes the other side's size.
    pub fn unify_broadcast(&mut self, a: &Shape, b: &Shape) -> Result<Shape, Conflict> {
        let (Shape::Dims(x), Shape::Dims(y)) = (a, b) else {
            return Ok(if matches!(a, Shape::Unknown) {
                b.clone()
            } else {
                a.clone()
            });
        };
        let rank = x.len().max(y.len());
        let (px, py) = (rank - x.len(), rank - y.len());
        let mut out = Vec::with_capacity(rank);
        for axis in 0..rank {
            let side = |d: &[Dim], pad: usize| {
                axis.checked_sub(pad)
                    .map_or(Dim::Known(1), |i| self.resolve(d[i]))
            };
            match (side(x, px), side(y, py)) {
                (Dim::Known(1), other) | (other, Dim::Known(1)) => out.push(other),
                (l, r) => {
                    self.unify_dim(l, r)
                        .map_err(|(left, right)| Conflict::Size { axis, left, right })?;
                    out.push(self.resolve(l));
                }
            }
        }
        self.propagate()?;
        Ok(Shape::Dims(out))
    }

    /// Re-examines every scale constraint until nothing changes.
    fn propagate(&mut self) -> Result<(), Conflict> {
        loop {
            let mut changed = false;
            for i in 0..self.scales.len() {
                let s = &self.scales[i];
                let (big, small, factor, origin, what) =
                    (s.big, s.small, s.factor, s.origin, s.what);
                // (A factor of 0 fits no dimension; a product past `u64::MAX` no known one.)
                match (self.resolve(big), self.resolve(small)) {
                    (Dim::Known(b), Dim::Known(sm)) if sm.checked_mul(factor) != Some(b) => {
                        return Err(Conflict::Scale {
                            big: b,
                            factor,
                            origin,
                            what,
                        });
                    }
                    (Dim::Known(b), Dim::Var(v)) => {
                        if factor == 0 || b % factor != 0 || b == 0 {
                            return Err(Conflict::Scale {
                                big: b,
                                factor,
                                origin,
                                what,
                            });
                        }
                        self.set(v, Slot::Bound(b / factor));
                        changed = true;
                    }
                    (Dim::Var(v), Dim::Known(sm)) => {
                        let Some(b) = sm.checked_mul(factor) else {
                            return Err(Conflict::TooLarge {
                                small: sm,
                                factor,
                                origin,
                                what,
                            });
                        };
                        self.set(v, Slot::Bound(b));
                        changed = true;
                    }
                    _ => {}
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;

    #[test]
    fn binding_flows_through_links() {
        let mut t = DimTable::new();
        let a = t.fresh();
        let b = t.fresh();
        t.unify_dim(a, b).unwrap();
        t.unify_dim(b, Dim::Known(28)).unwrap();
        assert_eq!(t.resolve(a), Dim::Known(28));
    }

    #[test]
    fn mismatch_binds_nothing() {
        let mut t = DimTable::new();
        let c = t.fresh();
        let s1 = Shape::Dims(vec![c, Dim::Known(7)]);
        let s2 = Shape::known(&[1, 14]);
        assert_eq!(
            t.unify_shape(&s1, &s2),
            Err(Conflict::Size {
                axis: 1,
                left: 7,
                right: 14
            })
        );
        assert!(matches!(t.resolve(c), Dim::Var(_)));
    }

    #[test]
    fn scale_constraints_check_divisibility_late() {
        let mut t = DimTable::new();
        let h = t.fresh();
        let h2 = t.fresh();
        let origin = Span::new(FileId(0), 0, 1);
        t.add_scale(Scale {
            big: h,
            small: h2,
            factor: 4,
            origin,
            what: "height",
        })
        .unwrap();
        let err = t
            .unify_shape(&Shape::Dims(vec![h]), &Shape::known(&[30]))
            .unwrap_err();
        assert!(matches!(
            err,
            Conflict::Scale {
                big: 30,
                factor: 4,
                ..
            }
        ));
        let mut t = DimTable::new();
        let h = t.fresh();
        let h2 = t.fresh();
        t.add_scale(Scale {
            big: h,
            small: h2,
            factor: 4,
            origin,
            what: "height",
        })
        .unwrap();
        t.unify_dim(h, Dim::Known(28)).unwrap();
        t.propagate().unwrap();
        assert_eq!(t.resolve(h2), Dim::Known(7));
    }

    #[test]
    fn broadcasting_accepts_ones() {
        let mut t = DimTable::new();
        let s = t
            .unify_broadcast(&Shape::known(&[1, 28, 28]), &Shape::known(&[3, 28, 28]))
            .unwrap();
        assert_eq!(s, Shape::known(&[3, 28, 28]));
        assert!(t
            .unify_broadcast(&Shape::known(&[2, 28, 28]), &Shape::known(&[3, 28, 28]))
            .is_err());
        // An image against a batch: the image has a leading dimension of 1.
        let s = t
            .unify_broadcast(&Shape::known(&[1, 28, 28]), &Shape::known(&[8, 3, 28, 28]))
            .unwrap();
        assert_eq!(s, Shape::known(&[8, 3, 28, 28]));
        assert_eq!(
            t.unify_broadcast(
                &Shape::known(&[8, 1, 28, 28]),
                &Shape::known(&[4, 1, 28, 28])
            ),
            Err(Conflict::Size {
                axis: 0,
                left: 8,
                right: 4
            })
        );
    }
}
