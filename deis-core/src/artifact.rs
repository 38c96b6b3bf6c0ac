//! Content-addressed build artifacts (gzipped tarballs) and their safe unpacking.
// Implemented by the platform helper.
