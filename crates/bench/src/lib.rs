//! Scenario benchmarks: latency, memory, accuracy and energy.
