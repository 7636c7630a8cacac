"""Running a trained network: evaluation, prediction, test-time augmentation, static export,
latency, and the metrics and allocator tuning they use."""
