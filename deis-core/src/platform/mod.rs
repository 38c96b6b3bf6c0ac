//! The controller's logic, without HTTP.
// Implemented by the platform helper.
