//! The errors of forward operators.

/// Errors of operators.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A tensor operation failed (shape mismatch inside candle, device error, ...).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// An input has a shape the operator cannot take, e.g. "downsample(4) needs a height
    /// divisible by 4, got [1, 30, 30]".
    #[error("{operator}: {reason}")]
    Shape {
        /// The operator's name.
        operator: String,
        /// What is wrong, in plain words.
        reason: String,
    },
    /// A constructor or method argument is out of range (a negative sigma, a mask that is
    /// not finite, ...).
    #[error("{operator}: {reason}")]
    Argument {
        /// The operator or function's name.
        operator: String,
        /// What is wrong, in plain words.
        reason: String,
    },
    /// A linear-only method was called on a non-linear operator.
    #[error("{operator} is not linear, so it has no {what}")]
    NotLinear {
        /// The operator's name.
        operator: String,
        /// The method asked for ("adjoint", "pseudo-inverse", ...).
        what: &'static str,
    },
    /// An SVD method was called on an operator without a known SVD.
    #[error("{operator} has no known SVD")]
    NoSvd {
        /// The operator's name.
        operator: String,
    },
    /// An iterative solver stopped before reaching its tolerance.
    #[error(
        "{what} did not converge in {iterations} iterations (relative residual {residual:.2e})"
    )]
    NotConverged {
        /// The solve that failed, e.g. "gram_solve of gaussian_blur(2) >> inpaint".
        what: String,
        /// The iterations it ran.
        iterations: usize,
        /// Its last relative residual.
        residual: f64,
    },
    /// An error raised by a user function inside a user operator (already rendered).
    #[error("{0}")]
    Callback(String),
}

/// The result type of operators.
pub type Result<T> = std::result::Result<T, OperatorError>;

/// A shape error of `operator`.
pub(crate) fn shape_error(operator: impl Into<String>, reason: impl Into<String>) -> OperatorError {
    OperatorError::Shape {
        operator: operator.into(),
        reason: reason.into(),
    }
}

/// An argument error of `operator`.
pub(crate) fn argument_error(
    operator: impl Into<String>,
    reason: impl Into<String>,
) -> OperatorError {
    OperatorError::Argument {
        operator: operator.into(),
        reason: reason.into(),
    }
}
