//! Maintainer automation (filled by the xtask issue).
fn main() {}
