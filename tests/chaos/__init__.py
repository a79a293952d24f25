"""The chaos suite (issue 8): fault injection against real Kafka, Redis and `tierstream run`."""
