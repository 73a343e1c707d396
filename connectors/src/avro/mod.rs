//! Avro: schema plans ([`plan`]) and binary decoding into Arrow columns ([`decode`]).

pub mod decode;
pub mod default;
pub mod plan;

pub use decode::{Column, Reader, UNAVAILABLE};
pub use plan::Plan;

#[cfg(test)]
mod tests;
