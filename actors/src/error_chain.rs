//! One line for an error and every source under it, for logs and readiness
//! details: actor failures wrap the adapter error that caused them.

use std::error::Error;
use std::fmt;

/// Displays `error: source: source's source …`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// Whether `error` or any of its sources is of type `E`.
pub fn caused_by<E: Error + 'static>(
    error: &(dyn Error + 'static),
    found: impl Fn(&E) -> bool,
) -> bool {
    let mut current = Some(error);
    while let Some(err) = current {
        if err.downcast_ref::<E>().is_some_and(&found) {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn shows_every_source_and_finds_a_cause() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&err).to_string(), "outer: inner");
        assert!(caused_by::<std::io::Error>(&err, |_| true));
        assert!(!caused_by::<std::fmt::Error>(&err, |_| true));
    }
}
