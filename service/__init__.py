"""Use cases: accept a filing, deliver a job, record an outcome; and the ports they need."""
