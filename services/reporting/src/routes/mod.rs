pub mod api_keys;
pub mod audit;
pub mod campaigns;
pub mod catalog;
pub mod me;
pub mod ops;
pub mod reports;
