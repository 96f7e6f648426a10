"""A client library that plays a user process."""
