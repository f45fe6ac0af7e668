//! Signed user-context headers (filled in below).
