//! Property tests: no input makes a parser panic, and every failure is a non-empty list of
//! well-formed error objects.
