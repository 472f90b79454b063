"""Security tests against a running gateway: access, callbacks, hostile input, secrets, fuzzing."""
