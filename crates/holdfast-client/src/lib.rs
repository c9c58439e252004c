//! Holdfast client.
