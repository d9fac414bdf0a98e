//! `shoji trace forward`: the standalone forwarder, the Kata way.
