//! Why a request about people was refused: the error kind [`decisions`](super::decisions),
//! [`names`](super::names) and [`store`](super::store) return, from which the service answers
//! 404, 409 or 400. Its own module so that the modules it is raised in need not import each
//! other.

/// Why a decision was refused: the message for the user, and its kind, from which the service
/// answers 404, 409 or 400. Decisions return it inside their `anyhow::Error`; anything else
/// they return is a fault of the gallery, not of the request.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A person or face that is not in the gallery, or no longer is.
    #[error("{0}")]
    NotFound(String),
    /// The gallery is not as the request expects: a face that is no longer the person's,
    /// nothing left to undo. What the loser of two decisions at once gets.
    #[error("{0}")]
    Conflict(String),
    /// A request that cannot be done as asked: an empty list, a bad name, a person merged
    /// into itself.
    #[error("{0}")]
    Invalid(String),
}
