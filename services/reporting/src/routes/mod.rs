pub mod admin;
pub mod campaigns;
pub mod ops;
