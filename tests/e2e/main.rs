//! End-to-end tests against real services (Tansu broker, moto S3, the project's registry),
//! started by `scripts/services up`. One test binary, so the crate graph links once.

mod bad_input;
mod chaos;
mod compaction;
mod faults;
mod fixture_replay;
mod group;
mod maintenance;
mod operations;
mod partitioned;
mod replay;
mod restart;
mod retention;
mod secrets;
mod serve;
mod sql;
mod stats;
mod stop;
mod support;
mod tls;
mod view_goldens;
mod views;
