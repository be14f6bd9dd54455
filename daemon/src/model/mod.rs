//! Resource documents in the Kubernetes shape: `apiVersion`, `kind`, `metadata`,
//! `spec`, `status`. Each area parses its own `spec`; this module owns what they share:
//! metadata, names, quantities and the "refuse what we do not honour" check.

pub mod meta;
pub mod quantity;
pub mod strict;
