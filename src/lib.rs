//! Tollgate: an API gateway that turns a project's workflow endpoints into
//! one governed API. See DESIGN.md for the contract and README.md for use.

pub mod admin;
pub mod agents;
pub mod app;
pub mod body;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod context;
pub mod demo;
pub mod gateway;
pub mod graphql;
pub mod headers;
pub mod metrics;
pub mod openapi;
pub mod policy;
pub mod problem;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod stack;
pub mod state;
pub mod telemetry;
