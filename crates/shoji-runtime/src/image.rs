//! OCI images into root filesystems: the `shoji-images` crate (layouts and archives read with
//! their digests verified, layers applied with every path resolved inside the root).

pub use shoji_images::{unpack, ImageError};
