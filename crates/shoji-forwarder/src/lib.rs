//! Receives the agent's SHJT span frames over hybrid vsock and hands them to a sink.
