//! The browser trace viewer, embedded as static assets and served by shoji trace serve.
