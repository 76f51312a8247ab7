//! The photo gallery: SQLite storage, the indexer and face search.

pub mod compact;
pub mod db;
pub mod index;
pub mod model;
pub mod search;
pub mod switch;
pub mod top;
