//! Test support: emulators and harness.
