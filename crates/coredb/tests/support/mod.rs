//! Shared pieces of the integration tests.

#![allow(dead_code)]

pub mod log_capture;
pub mod netns;
pub mod proxy;
pub mod span_capture;
